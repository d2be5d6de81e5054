//! CSV cells safe to open in a spreadsheet: the one place every CSV file of retrace (the
//! report's tables, `retrace replay -o csv`, `retrace diff`'s CSV) turns a value into a cell.
//!
//! Captured strings are hostile. Quoting (done by the `csv` crate) keeps `,`, `"` and new
//! lines inside their cell; what it does not stop is *CSV injection*: a cell that starts with
//! `=`, `+`, `-`, `@`, a tab or a carriage return is taken for a formula by Excel, LibreOffice
//! and Google Sheets (`=cmd|' /C calc'!A0`, `=HYPERLINK(...)`). Such a cell is written with a
//! leading `'`, which spreadsheets read as "text" and do not show (OWASP's advice). Numbers
//! (`-1.5`, `+3`) are left alone: they are what the columns hold, and a spreadsheet reads them
//! as numbers, not formulas.

use std::borrow::Cow;
use std::io::Write;

/// First characters that make a spreadsheet evaluate a cell.
const FORMULA_START: [char; 6] = ['=', '+', '-', '@', '\t', '\r'];

/// `s` as a cell a spreadsheet will not evaluate: prefixed with `'` when it starts like a
/// formula and is not a number; unchanged (borrowed) otherwise.
pub fn csv_cell(s: &str) -> Cow<'_, str> {
    if s.starts_with(FORMULA_START) && s.parse::<f64>().is_err() {
        let mut out = String::with_capacity(s.len() + 1);
        out.push('\'');
        out.push_str(s);
        Cow::Owned(out)
    } else {
        Cow::Borrowed(s)
    }
}

/// A `csv::Writer` whose every field goes through [`csv_cell`].
pub struct CsvWriter<W: Write>(csv::Writer<W>);

impl<W: Write> CsvWriter<W> {
    /// Wraps a configured `csv` writer.
    pub fn new(inner: csv::Writer<W>) -> Self {
        Self(inner)
    }

    /// Writes one record, each field made safe.
    pub fn write_record<I, T>(&mut self, record: I) -> csv::Result<()>
    where
        I: IntoIterator<Item = T>,
        T: AsRef<str>,
    {
        self.0.write_record(
            record
                .into_iter()
                .map(|f| csv_cell(f.as_ref()).into_owned()),
        )
    }

    /// Flushes the underlying writer.
    pub fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }

    /// Flushes and returns the underlying writer.
    pub fn into_inner(self) -> std::io::Result<W> {
        self.0.into_inner().map_err(|e| e.into_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formulas_are_neutralised_numbers_and_text_kept() {
        for (cell, want) in [
            ("=cmd|' /C calc'!A0", "'=cmd|' /C calc'!A0"),
            ("+SUM(1)", "'+SUM(1)"),
            ("-2+3", "'-2+3"),
            ("@SUM(A1)", "'@SUM(A1)"),
            ("\t=1", "'\t=1"),
            ("\r=1", "'\r=1"),
            ("-", "'-"),
            ("-1.5", "-1.5"),
            ("+3", "+3"),
            ("-0", "-0"),
            ("1e-3", "1e-3"),
            ("GET /a=b", "GET /a=b"),
            ("", ""),
            ("'=x", "'=x"),
        ] {
            assert_eq!(csv_cell(cell), want, "{cell:?}");
        }
    }

    #[test]
    fn the_writer_neutralises_every_field_and_still_quotes() {
        let mut w = CsvWriter::new(csv::Writer::from_writer(Vec::new()));
        w.write_record(["=1+1", "a,\"b\"\n", "-3"]).expect("write");
        let bytes = w.into_inner().expect("flush");
        assert_eq!(
            String::from_utf8_lossy(&bytes),
            "'=1+1,\"a,\"\"b\"\"\n\",-3\n"
        );
    }
}
