//! Typed columns and the [`table!`] macro that declares a table: its Arrow schema and one
//! Arrow builder per column, filled row by row and cut into record batches.
//!
//! A column's type says what engines read: [`Time`] is `timestamp[ns, UTC]`, integers are
//! signed (Spark and Hive have no unsigned types; a pid, a port or a u32 count fits, 64-bit
//! ids and addresses keep their bits), strings are UTF-8, captured bytes are binary.

use std::sync::Arc;

use arrow_array::builder::{
    ArrayBuilder, BinaryBuilder, BooleanBuilder, Float64Builder, Int32Builder, Int64Builder,
    ListBuilder, StringBuilder, StructBuilder, TimestampNanosecondBuilder,
};
use arrow_schema::{DataType, Field, Fields, TimeUnit};

/// The time zone of every timestamp column.
pub const UTC: &str = "UTC";

/// A column type: its Arrow type and the builder that fills it.
pub trait Column {
    /// The builder.
    type Builder: ArrayBuilder;
    /// A new, empty builder.
    fn builder() -> Self::Builder;
    /// The Arrow type.
    fn data_type() -> DataType;
}

/// `timestamp[ns, UTC]`: wall-clock ns since the epoch.
pub struct Time;
/// `int32`.
pub struct I32;
/// `int64`.
pub struct I64;
/// `double`.
pub struct F64;
/// `bool`.
pub struct Bool;
/// `string` (UTF-8).
pub struct Str;
/// `binary`: bytes as captured.
pub struct Bin;
/// `list<string>`.
pub struct StrList;
/// `list<int64>`.
pub struct I64List;
/// `list<struct<stack: int64, bytes: int64, count: int64>>` (outstanding allocations).
pub struct StackCounts;

impl Column for Time {
    type Builder = TimestampNanosecondBuilder;
    fn builder() -> Self::Builder {
        TimestampNanosecondBuilder::new().with_timezone(UTC)
    }
    fn data_type() -> DataType {
        DataType::Timestamp(TimeUnit::Nanosecond, Some(UTC.into()))
    }
}

macro_rules! simple_column {
    ($ty:ident, $builder:ident, $dt:expr) => {
        impl Column for $ty {
            type Builder = $builder;
            fn builder() -> Self::Builder {
                $builder::new()
            }
            fn data_type() -> DataType {
                $dt
            }
        }
    };
}
simple_column!(I32, Int32Builder, DataType::Int32);
simple_column!(I64, Int64Builder, DataType::Int64);
simple_column!(F64, Float64Builder, DataType::Float64);
simple_column!(Bool, BooleanBuilder, DataType::Boolean);
simple_column!(Str, StringBuilder, DataType::Utf8);
simple_column!(Bin, BinaryBuilder, DataType::Binary);

/// The element field of every list column (Arrow's and Parquet's usual `item`).
fn item(dt: DataType) -> Arc<Field> {
    Arc::new(Field::new("item", dt, true))
}

impl Column for StrList {
    type Builder = ListBuilder<StringBuilder>;
    fn builder() -> Self::Builder {
        ListBuilder::new(StringBuilder::new())
    }
    fn data_type() -> DataType {
        DataType::List(item(DataType::Utf8))
    }
}

impl Column for I64List {
    type Builder = ListBuilder<Int64Builder>;
    fn builder() -> Self::Builder {
        ListBuilder::new(Int64Builder::new())
    }
    fn data_type() -> DataType {
        DataType::List(item(DataType::Int64))
    }
}

/// The fields of one [`StackCounts`] element.
fn stack_count_fields() -> Fields {
    Fields::from(vec![
        Field::new("stack", DataType::Int64, false),
        Field::new("bytes", DataType::Int64, false),
        Field::new("count", DataType::Int64, false),
    ])
}

impl Column for StackCounts {
    type Builder = ListBuilder<StructBuilder>;
    fn builder() -> Self::Builder {
        ListBuilder::new(StructBuilder::from_fields(stack_count_fields(), 0))
    }
    fn data_type() -> DataType {
        DataType::List(item(DataType::Struct(stack_count_fields())))
    }
}

/// Appends one element `(stack, bytes, count)` to the current list of a [`StackCounts`]
/// builder.
pub fn push_stack_count(b: &mut ListBuilder<StructBuilder>, stack: i64, bytes: i64, count: i64) {
    let s = b.values();
    for (i, v) in [stack, bytes, count].into_iter().enumerate() {
        if let Some(f) = s.field_builder::<Int64Builder>(i) {
            f.append_value(v);
        }
    }
    s.append(true);
}

/// A u64 as an `int64` column holds it: the same 64 bits (ids and addresses above 2^63 read
/// back negative; `CAST(x AS UBIGINT)` in DuckDB, `& 0xFFFFFFFFFFFFFFFF` elsewhere).
pub fn bits(v: u64) -> i64 {
    v as i64
}

/// A u64 count or size as an `int64` (saturating: no real count reaches 2^63).
pub fn count(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A u32 (pid, tid, port) as an `int32` column holds it, saturating (Linux pids and tids stay
/// below 2^22).
pub fn i32_of(v: u32) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

/// A wall-clock time as a [`Time`] column holds it (ns since the epoch, saturating in 2262).
pub fn ts(wall_ns: u64) -> i64 {
    count(wall_ns)
}

/// What every table declared with [`table!`] offers.
pub trait Table: Send + 'static {
    /// The table's name: the `table=` directory of the dataset.
    const NAME: &'static str;
    /// Integer or time columns each batch's rows are sorted by before they are written (none:
    /// as appended, i.e. time order). See `docs/parquet.md`, "Row order".
    const ORDER: &'static [&'static str] = &[];
    /// A table with no rows.
    fn new() -> Self;
    /// The columns, in order.
    fn fields() -> Vec<Field>;
    /// Rows appended since the last [`Table::finish`].
    fn rows(&self) -> usize;
    /// The columns of the rows appended so far, the builders left empty.
    fn finish(&mut self) -> Vec<arrow_array::ArrayRef>;
}

/// Declares a table: `table! { pub struct Name = "name" { column: Type, column: Type null } }`
/// gives a struct with one public builder per column (`Type` a [`Column`]; `null` when the
/// column may hold nulls) implementing [`Table`]; `order [a, b]` after the name sets
/// [`Table::ORDER`].
macro_rules! table {
    (
        $(#[$doc:meta])*
        pub struct $name:ident = $table:literal $(order [$($order:ident),*])? {
            $( $(#[$fdoc:meta])* $field:ident : $ty:ident $($null:ident)? ),* $(,)?
        }
    ) => {
        $(#[$doc])*
        pub struct $name {
            $( $(#[$fdoc])* pub $field: <$ty as $crate::cmd::export::parquet::columns::Column>::Builder, )*
        }

        impl $crate::cmd::export::parquet::columns::Table for $name {
            const NAME: &'static str = $table;
            $( const ORDER: &'static [&'static str] = &[$(stringify!($order)),*]; )?

            fn new() -> Self {
                use $crate::cmd::export::parquet::columns::Column as _;
                Self { $( $field: $ty::builder(), )* }
            }

            fn fields() -> Vec<arrow_schema::Field> {
                use $crate::cmd::export::parquet::columns::Column as _;
                vec![$(
                    arrow_schema::Field::new(
                        stringify!($field),
                        $ty::data_type(),
                        table!(@nullable $($null)?),
                    ),
                )*]
            }

            fn rows(&self) -> usize {
                let lens = [$( arrow_array::builder::ArrayBuilder::len(&self.$field), )*];
                lens.first().copied().unwrap_or(0)
            }

            fn finish(&mut self) -> Vec<arrow_array::ArrayRef> {
                vec![$( arrow_array::builder::ArrayBuilder::finish(&mut self.$field), )*]
            }
        }
    };
    (@nullable null) => { true };
    (@nullable) => { false };
}
pub(crate) use table;
