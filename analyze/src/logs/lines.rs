//! Captured writes of one stream (a process's stdout, stderr or log file) split into lines,
//! and lines into log events.
//!
//! A line split over several writes is joined; a write whose real size is larger than its
//! captured prefix ends the line it was writing (marked cut off) and the bytes not captured
//! are counted on the event, never invented. Lines are grouped into events: a line with its
//! continuation lines (indented lines, a Python traceback with its exception line and chained
//! tracebacks, Java's `Caused by:`, PostgreSQL's `DETAIL:`/`HINT:`/`STATEMENT:` lines), so
//! that a traceback is one error event, not N lines. An event is complete when the next
//! event's first line arrives or the stream ends.

use super::level::{self, Level};

/// Longest line kept (bytes); the rest of a longer line is counted as cut off.
pub const MAX_LINE: usize = 8192;
/// Longest message kept per event (bytes, the event's first line).
pub const MAX_MESSAGE: usize = 1024;
/// A traceback written by the same thread this soon after a line belongs to it, ns.
const TRACEBACK_JOIN_NS: u64 = 5_000_000;

/// Where a Python traceback is in an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
enum Traceback {
    #[default]
    None,
    /// After `Traceback (most recent call last):`, before the exception line.
    In,
    /// After the exception line (a chained traceback may follow).
    After,
}

/// One log event: a line and its continuation lines.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Event {
    /// Time of the write of its first line, wall ns.
    pub ts_ns: u64,
    /// Thread that wrote its first line.
    pub tid: u32,
    /// Its level (an event with a traceback and no level of its own is an error).
    pub level: Level,
    /// Its first line (at most [`MAX_MESSAGE`] bytes, lossy UTF-8).
    pub message: String,
    /// Lines in it (the first included, blank lines inside a traceback too).
    pub lines: u32,
    /// Bytes written for it that the capture did not keep (beyond the captured prefix).
    pub cut_off_bytes: u64,
    /// Its first line was cut off by the captured prefix.
    pub cut: bool,
    traceback: Traceback,
    last_ts: u64,
    last_tid: u32,
    last_write: u64,
}

/// The splitter of one stream.
#[derive(Default)]
pub struct Stream {
    partial: Vec<u8>,
    partial_ts: u64,
    partial_tid: u32,
    /// Bytes of the partial line beyond [`MAX_LINE`].
    partial_over: u64,
    pending: Option<Event>,
    writes: u64,
    /// Bytes cut off before any event of the stream.
    pub unattributed_cut: u64,
}

/// A cut of `s` at most `n` bytes long, on a character boundary.
pub(crate) fn cap(s: &str, n: usize) -> &str {
    if s.len() <= n {
        return s;
    }
    let mut end = n;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// What is known of a line besides its text.
#[derive(Clone, Copy)]
struct LineCx {
    d: level::Detected,
    ts: u64,
    tid: u32,
    write: u64,
    cut: bool,
}

const TRACEBACK: &str = "Traceback (most recent call last):";

/// A traceback's first line (or, cut off by the captured prefix, its beginning).
fn starts_traceback(line: &str, cut: bool) -> bool {
    line.starts_with(TRACEBACK) || (cut && line.len() >= 9 && TRACEBACK.starts_with(line))
}

/// `ValueError: ...`, `requests.exceptions.ConnectionError`, `KeyboardInterrupt`.
fn is_exception_line(line: &str) -> bool {
    let name = line.split(':').next().unwrap_or("");
    !name.is_empty()
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
}

impl Stream {
    /// One write: `size` bytes written, of which `payload` was captured.
    pub fn write(&mut self, ts: u64, tid: u32, size: u64, payload: &[u8], out: &mut Vec<Event>) {
        self.writes += 1;
        let cut = size.saturating_sub(payload.len() as u64);
        let mut rest = payload;
        while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
            let piece = &rest[..nl];
            if self.partial.is_empty() && self.partial_over == 0 {
                self.line(piece, ts, tid, false, out);
            } else {
                self.append(piece);
                let text = std::mem::take(&mut self.partial);
                let (pts, ptid) = (self.partial_ts, self.partial_tid);
                let over = std::mem::take(&mut self.partial_over);
                self.line(&text, pts, ptid, false, out);
                self.add_cut(over);
                self.partial = text;
                self.partial.clear();
            }
            rest = &rest[nl + 1..];
        }
        if !rest.is_empty() {
            if self.partial.is_empty() && self.partial_over == 0 {
                self.partial_ts = ts;
                self.partial_tid = tid;
            }
            self.append(rest);
        }
        if cut > 0 {
            // The rest of the write was not captured: the line it was writing ends here.
            if !self.partial.is_empty() || self.partial_over > 0 {
                let text = std::mem::take(&mut self.partial);
                let (pts, ptid) = (self.partial_ts, self.partial_tid);
                let over = std::mem::take(&mut self.partial_over);
                self.line(&text, pts, ptid, true, out);
                self.add_cut(over);
                self.partial = text;
                self.partial.clear();
            }
            self.add_cut(cut);
        }
    }

    fn append(&mut self, bytes: &[u8]) {
        let room = MAX_LINE.saturating_sub(self.partial.len());
        let take = bytes.len().min(room);
        self.partial.extend_from_slice(&bytes[..take]);
        self.partial_over += (bytes.len() - take) as u64;
    }

    fn add_cut(&mut self, n: u64) {
        if n == 0 {
            return;
        }
        match self.pending.as_mut() {
            Some(p) => p.cut_off_bytes += n,
            None => self.unattributed_cut += n,
        }
    }

    /// The stream ended (or the analysis did): its last line and event are complete.
    pub fn finish(&mut self, out: &mut Vec<Event>) {
        if !self.partial.is_empty() || self.partial_over > 0 {
            let text = std::mem::take(&mut self.partial);
            let over = std::mem::take(&mut self.partial_over);
            self.line(&text, self.partial_ts, self.partial_tid, false, out);
            self.add_cut(over);
        }
        if let Some(p) = self.pending.take() {
            out.push(p);
        }
    }

    /// Whether `line` continues the pending event.
    fn continues(p: &mut Event, line: &str, cx: LineCx) -> bool {
        let LineCx {
            d,
            ts,
            tid,
            write,
            cut,
        } = cx;
        if d.continues || line.starts_with([' ', '\t']) || line.starts_with("Caused by:") {
            return true;
        }
        if starts_traceback(line, cut) {
            let joined = p.last_write == write
                || (p.last_tid == tid && ts.saturating_sub(p.last_ts) <= TRACEBACK_JOIN_NS)
                || p.traceback == Traceback::After;
            if joined {
                p.traceback = Traceback::In;
            }
            return joined;
        }
        match p.traceback {
            Traceback::In if is_exception_line(line) => {
                p.traceback = Traceback::After;
                true
            }
            Traceback::After => {
                line.starts_with("During handling of the above exception")
                    || line.starts_with("The above exception was the direct cause")
            }
            _ => false,
        }
    }

    fn line(&mut self, bytes: &[u8], ts: u64, tid: u32, cut: bool, out: &mut Vec<Event>) {
        let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
        let text = String::from_utf8_lossy(bytes);
        let write = self.writes;
        if text.trim().is_empty() {
            // blank lines are not events; inside a traceback they are its lines
            if let Some(p) = self
                .pending
                .as_mut()
                .filter(|p| p.traceback != Traceback::None)
            {
                p.lines += 1;
            }
            return;
        }
        let d = level::detect(&text);
        if let Some(p) = self.pending.as_mut() {
            let cx = LineCx {
                d,
                ts,
                tid,
                write,
                cut,
            };
            if Self::continues(p, &text, cx) {
                p.lines += 1;
                p.last_ts = ts;
                p.last_tid = tid;
                p.last_write = write;
                if p.traceback != Traceback::None && p.level == Level::Unknown {
                    p.level = Level::Error;
                }
                return;
            }
        }
        if let Some(p) = self.pending.take() {
            out.push(p);
        }
        let traceback = if starts_traceback(&text, cut) {
            Traceback::In
        } else {
            Traceback::None
        };
        let level = if traceback != Traceback::None && d.level == Level::Unknown {
            Level::Error
        } else {
            d.level
        };
        self.pending = Some(Event {
            ts_ns: ts,
            tid,
            level,
            message: cap(&text, MAX_MESSAGE).to_string(),
            lines: 1,
            cut_off_bytes: 0,
            cut,
            traceback,
            last_ts: ts,
            last_tid: tid,
            last_write: write,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds writes (ts, bytes written, captured prefix length) and returns the events.
    fn split(writes: &[(u64, &str, usize)]) -> (Vec<Event>, u64) {
        let mut s = Stream::default();
        let mut out = Vec::new();
        for &(ts, text, keep) in writes {
            let b = text.as_bytes();
            s.write(ts, 7, b.len() as u64, &b[..keep.min(b.len())], &mut out);
        }
        s.finish(&mut out);
        (out, s.unattributed_cut)
    }

    fn all(text: &str) -> usize {
        text.len()
    }

    #[test]
    fn lines_split_over_writes_are_joined() {
        let (ev, _) = split(&[
            (1, "INFO first", 100),
            (2, " half\nINFO second\nWARN", 100),
            (3, "ING third\n", 100),
        ]);
        let msgs: Vec<&str> = ev.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(msgs, ["INFO first half", "INFO second", "WARNING third"]);
        assert_eq!(ev[0].ts_ns, 1, "a line's time is its first write's");
        assert_eq!(ev[2].level, Level::Warning);
        assert!(ev.iter().all(|e| e.lines == 1 && e.cut_off_bytes == 0));
    }

    #[test]
    fn a_python_traceback_is_one_error_event() {
        let record = "2026-12-06 12:00:00,001 ERROR app: failed to load item 31\n\
                      Traceback (most recent call last):\n  File \"/srv/app.py\", line 40, in get\n    \
                      load(31)\nValueError: item 31 is broken\n\nDuring handling of the above \
                      exception, another exception occurred:\n\nTraceback (most recent call last):\n  \
                      File \"/srv/app.py\", line 42, in get\n    raise LookupError(31)\nLookupError: 31\n";
        let (ev, _) = split(&[
            (1, "2026-12-06 12:00:00,000 INFO app: GET /items/30\n", 1000),
            (2, record, 1000),
            (3, "2026-12-06 12:00:00,002 INFO app: GET /items/32\n", 1000),
        ]);
        assert_eq!(ev.len(), 3, "{ev:#?}");
        assert_eq!(ev[1].level, Level::Error);
        assert_eq!(ev[1].lines, 12);
        assert_eq!(
            ev[1].message,
            "2026-12-06 12:00:00,001 ERROR app: failed to load item 31"
        );
        // an uncaught exception printed by the interpreter: its own error event
        let (ev, _) = split(&[
            (1, "started\n", 100),
            (10_000_000_000, "Traceback (most recent call last):\n", 100),
            (
                10_000_000_001,
                "  File \"x.py\", line 1, in <module>\n",
                100,
            ),
            (10_000_000_002, "KeyError: 'a'\n", 100),
        ]);
        assert_eq!(ev.len(), 2);
        assert_eq!(ev[1].level, Level::Error);
        assert_eq!(ev[1].lines, 3);
    }

    #[test]
    fn what_the_prefix_cut_off_is_counted_not_invented() {
        let long = format!(
            "ERROR boom\nTraceback (most recent call last):\n{}",
            "  x\n".repeat(200)
        );
        let keep = 30;
        let (ev, unattributed) = split(&[(1, &long, keep), (2, "INFO next\n", all("INFO next\n"))]);
        assert_eq!(ev.len(), 2, "{ev:#?}");
        assert_eq!(ev[0].message, "ERROR boom");
        assert_eq!(ev[0].level, Level::Error);
        // "ERROR boom\n" (11) + 19 bytes of the traceback's first line, cut
        assert_eq!(ev[0].lines, 2);
        assert_eq!(ev[0].cut_off_bytes, (long.len() - keep) as u64);
        assert_eq!(ev[1].message, "INFO next");
        assert_eq!(unattributed, 0);
        // a single line cut: marked, its missing bytes on it
        let (ev, _) = split(&[(1, "WARNING a very long line\n", 9)]);
        assert_eq!(ev[0].message, "WARNING a");
        assert!(ev[0].cut);
        assert_eq!(ev[0].cut_off_bytes, 16);
    }

    #[test]
    fn postgres_and_java_continuations() {
        let (ev, _) = split(&[(
            1,
            "2026-12-06 12:00:00.123 UTC [4711] ERROR:  division by zero\n\
             2026-12-06 12:00:00.123 UTC [4711] STATEMENT:  SELECT 1/0\n\
             2026-12-06 12:00:01.000 UTC [4711] LOG:  checkpoint starting: time\n\
             Exception in thread \"main\" java.lang.IllegalStateException: closed\n\
             \tat a.B.c(B.java:3)\nCaused by: java.io.IOException: reset\n\t... 4 more\n",
            10_000,
        )]);
        let got: Vec<(Level, u32)> = ev.iter().map(|e| (e.level, e.lines)).collect();
        assert_eq!(
            got,
            [(Level::Error, 2), (Level::Info, 1), (Level::Error, 4)]
        );
    }

    #[test]
    fn long_lines_are_bounded() {
        let line = format!("INFO {}\n", "y".repeat(MAX_LINE * 2));
        let mut s = Stream::default();
        let mut out = Vec::new();
        for chunk in line.as_bytes().chunks(1000) {
            s.write(1, 1, chunk.len() as u64, chunk, &mut out);
        }
        s.finish(&mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].message.len(), MAX_MESSAGE);
        assert_eq!(out[0].cut_off_bytes, (line.len() - 1 - MAX_LINE) as u64);
    }
}
