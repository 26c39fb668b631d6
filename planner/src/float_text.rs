//! Casts of `float4` / `float8` to text, spelled as PostgreSQL spells floats; and of
//! `interval`, spelled as PostgreSQL's `interval_out` does (`1 mon 15 days 08:00:00`, where
//! Arrow writes `1 mons 15 days 8 hours`), with [`crate::interval_arith::interval_text`].
//!
//! Timestamps likewise: Arrow writes `2026-01-02T02:00:00`, PostgreSQL `2026-01-02 02:00:00`,
//! and a timestamptz in the session's TimeZone with its offset (`2026-01-02 03:00:00+01`), as
//! the wire layer sends them ([`crate::types::timestamp_text`]).
//!
//! Arrow's cast writes `2.0`, `1e20` and `inf` where PostgreSQL's `float8out` writes `2`,
//! `1e+20` and `Infinity`; the difference shows in `x::text`, in `'v' || x` (whose cast
//! DataFusion's type coercion adds) and in anything built from them. So a cast of a float to
//! a string type is rewritten into `float8out(x)` / `float4out(x)`, which format each value with
//! [`crate::types::float8_text`] — the same function the wire layer uses for float columns.
//! Registered like the checked arithmetic (`crate::arithmetic::register_rewrite`): as a
//! function rewrite (`create_physical_expr`, start of the analyzer) and as an analyzer rule
//! after type coercion, for the casts coercion adds.
//!
//! What must stay true: the rewritten expression keeps the name of the cast it replaces (a
//! cast's name is its operand's), so no column reference above it changes.

use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{Array, ArrayRef, AsArray, StringBuilder};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    DataType, Float32Type, Float64Type, IntervalMonthDayNanoType, IntervalUnit, TimeUnit,
    TimestampMicrosecondType,
};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::Transformed;
use datafusion::common::{
    internal_err, DFSchema, DataFusionError, Result as DfResult, ScalarValue,
};
use datafusion::logical_expr::expr_rewriter::FunctionRewrite;
use datafusion::logical_expr::{
    ColumnarValue, Expr, ExprSchemable, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility,
};
use datafusion::prelude::SessionContext;

use crate::interval_arith::interval_text;
use crate::types::{float4_text, float8_text, timestamp_text, timestamptz_text, SessionTimeZone};

/// `float8out` (over Float64) or `float4out` (over Float32).
#[derive(Debug, PartialEq, Eq, Hash)]
struct FloatOut {
    name: &'static str,
    signature: Signature,
}

static FLOAT8_OUT: LazyLock<ScalarUDF> = LazyLock::new(|| {
    ScalarUDF::new_from_impl(FloatOut {
        name: "float8out",
        signature: Signature::exact(vec![DataType::Float64], Volatility::Immutable),
    })
});

static INTERVAL_OUT: LazyLock<ScalarUDF> = LazyLock::new(|| {
    ScalarUDF::new_from_impl(FloatOut {
        name: "interval_out",
        signature: Signature::exact(
            vec![DataType::Interval(IntervalUnit::MonthDayNano)],
            Volatility::Immutable,
        ),
    })
});

static FLOAT4_OUT: LazyLock<ScalarUDF> = LazyLock::new(|| {
    ScalarUDF::new_from_impl(FloatOut {
        name: "float4out",
        signature: Signature::exact(vec![DataType::Float32], Volatility::Immutable),
    })
});

impl ScalarUDFImpl for FloatOut {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Utf8)
    }

    /// The cast's own name: its operand's.
    fn schema_name(&self, args: &[Expr]) -> DfResult<String> {
        match args {
            [a] => Ok(a.schema_name().to_string()),
            _ => internal_err!("{} takes one argument", self.name),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let [arg] = args.args.as_slice() else {
            return internal_err!("{} takes one argument", self.name);
        };
        match arg {
            ColumnarValue::Scalar(s) => Ok(ColumnarValue::Scalar(ScalarValue::Utf8(match s {
                ScalarValue::Float64(v) => v.map(float8_text),
                ScalarValue::Float32(v) => v.map(float4_text),
                ScalarValue::IntervalMonthDayNano(v) => v.map(interval_text),
                other => return internal_err!("{} got {}", self.name, other.data_type()),
            }))),
            ColumnarValue::Array(a) => Ok(ColumnarValue::Array(texts(a)?)),
        }
    }
}

/// `timestamp_out` / `timestamptz_out`: a timestamp as PostgreSQL's text, a timestamptz in
/// the session's TimeZone (read when the call runs, so `SET TIME ZONE` counts).
#[derive(Debug)]
struct TimestampOut {
    name: &'static str,
    zone: Option<Arc<parking_lot::Mutex<SessionTimeZone>>>,
    signature: Signature,
}

impl PartialEq for TimestampOut {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
            && match (&self.zone, &other.zone) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            }
    }
}

impl Eq for TimestampOut {}

impl std::hash::Hash for TimestampOut {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state);
    }
}

impl ScalarUDFImpl for TimestampOut {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Utf8)
    }

    /// The cast's own name: its operand's.
    fn schema_name(&self, args: &[Expr]) -> DfResult<String> {
        match args {
            [a] => Ok(a.schema_name().to_string()),
            _ => internal_err!("{} takes one argument", self.name),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let [arg] = args.args.as_slice() else {
            return internal_err!("{} takes one argument", self.name);
        };
        let zone = self.zone.as_ref().map(|z| *z.lock());
        let text = |us: i64| match zone {
            Some(tz) => timestamptz_text(us, tz),
            None => timestamp_text(us),
        };
        let a = arg.to_array(args.number_rows)?;
        let micros = cast(&a, &DataType::Timestamp(TimeUnit::Microsecond, None))?;
        let mut out = StringBuilder::with_capacity(micros.len(), micros.len() * 24);
        for v in micros.as_primitive::<TimestampMicrosecondType>().iter() {
            match v {
                None => out.append_null(),
                Some(us) => match text(us) {
                    Some(t) => out.append_value(t),
                    None => {
                        return Err(DataFusionError::Execution(format!(
                            "timestamp out of range: {us} microseconds"
                        )))
                    }
                },
            }
        }
        let out: ArrayRef = Arc::new(out.finish());
        Ok(match arg {
            ColumnarValue::Scalar(_) => {
                ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?)
            }
            ColumnarValue::Array(_) => ColumnarValue::Array(out),
        })
    }
}

static TIMESTAMP_OUT: LazyLock<Arc<ScalarUDF>> = LazyLock::new(|| {
    Arc::new(ScalarUDF::new_from_impl(TimestampOut {
        name: "timestamp_out",
        zone: None,
        signature: Signature::any(1, Volatility::Immutable),
    }))
});

fn texts(a: &ArrayRef) -> DfResult<ArrayRef> {
    let mut out = StringBuilder::with_capacity(a.len(), a.len() * 8);
    if let Some(p) = a.as_primitive_opt::<Float64Type>() {
        for v in p.iter() {
            out.append_option(v.map(float8_text));
        }
    } else if let Some(p) = a.as_primitive_opt::<Float32Type>() {
        for v in p.iter() {
            out.append_option(v.map(float4_text));
        }
    } else if let Some(p) = a.as_primitive_opt::<IntervalMonthDayNanoType>() {
        for v in p.iter() {
            out.append_option(v.map(interval_text));
        }
    } else {
        return internal_err!("float output got {}", a.data_type());
    }
    Ok(Arc::new(out.finish()))
}

/// Rewrites a cast of a float, an interval or a timestamp to a string type into the output
/// function of its type.
#[derive(Debug)]
pub struct FloatText {
    /// `timestamptz_out` in this session's TimeZone.
    timestamptz_out: Arc<ScalarUDF>,
}

impl FloatText {
    fn rewrite_one(&self, expr: Expr, schema: &DFSchema) -> Transformed<Expr> {
        let Expr::Cast(cast) = expr else {
            return Transformed::no(expr);
        };
        let target = cast.field.data_type().clone();
        let function = match (cast.expr.get_type(schema), &target) {
            (_, t) if !matches!(t, DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8) => {
                None
            }
            (Ok(DataType::Float64), _) => Some(&*FLOAT8_OUT),
            (Ok(DataType::Float32), _) => Some(&*FLOAT4_OUT),
            (Ok(DataType::Interval(IntervalUnit::MonthDayNano)), _) => Some(&*INTERVAL_OUT),
            (Ok(DataType::Timestamp(_, None)), _) => Some(TIMESTAMP_OUT.as_ref()),
            (Ok(DataType::Timestamp(_, Some(_))), _) => Some(self.timestamptz_out.as_ref()),
            _ => None,
        };
        match function {
            Some(f) if target == DataType::Utf8 => Transformed::yes(f.call(vec![*cast.expr])),
            // The text, then the string type the cast asked for (SQL's `text` plans as
            // Utf8View); the inner expression is no float cast, so this is rewritten once.
            Some(f) => Transformed::yes(datafusion::logical_expr::cast(
                f.call(vec![*cast.expr]),
                target,
            )),
            None => Transformed::no(Expr::Cast(cast)),
        }
    }
}

impl FunctionRewrite for FloatText {
    fn name(&self) -> &str {
        "braid_float_text"
    }

    fn rewrite(
        &self,
        expr: Expr,
        schema: &DFSchema,
        _config: &ConfigOptions,
    ) -> DfResult<Transformed<Expr>> {
        Ok(self.rewrite_one(expr, schema))
    }
}

/// Makes casts of floats, intervals and timestamps to text in `ctx` spell them as PostgreSQL
/// does; a timestamptz in the TimeZone `zone` holds (UTC without one).
pub fn register(
    ctx: &SessionContext,
    zone: Option<Arc<parking_lot::Mutex<SessionTimeZone>>>,
) -> DfResult<()> {
    let zone = zone.unwrap_or_default();
    let timestamptz_out = Arc::new(ScalarUDF::new_from_impl(TimestampOut {
        name: "timestamptz_out",
        zone: Some(zone),
        // Stable, not immutable: the text depends on the session's TimeZone.
        signature: Signature::any(1, Volatility::Stable),
    }));
    crate::arithmetic::register_rewrite(ctx, Arc::new(FloatText { timestamptz_out }))
}
