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

/// One of PostgreSQL's output functions: `float8out`, `float4out`, `interval_out`,
/// `timestamp_out`, or `timestamptz_out`, which writes in the session's TimeZone (read when
/// the call runs, so `SET TIME ZONE` counts).
#[derive(Debug)]
struct TextOut {
    name: &'static str,
    zone: Option<Arc<parking_lot::Mutex<SessionTimeZone>>>,
    signature: Signature,
}

impl TextOut {
    fn udf(name: &'static str, input: Option<DataType>) -> ScalarUDF {
        let signature = match input {
            Some(t) => Signature::exact(vec![t], Volatility::Immutable),
            None => Signature::any(1, Volatility::Immutable),
        };
        ScalarUDF::new_from_impl(TextOut {
            name,
            zone: None,
            signature,
        })
    }

    /// The text of each value of `a`, a float, interval or timestamp array.
    fn texts(&self, a: &ArrayRef) -> DfResult<ArrayRef> {
        let mut out = StringBuilder::with_capacity(a.len(), a.len() * 8);
        if let Some(p) = a.as_primitive_opt::<Float64Type>() {
            p.iter().for_each(|v| out.append_option(v.map(float8_text)));
        } else if let Some(p) = a.as_primitive_opt::<Float32Type>() {
            p.iter().for_each(|v| out.append_option(v.map(float4_text)));
        } else if let Some(p) = a.as_primitive_opt::<IntervalMonthDayNanoType>() {
            p.iter()
                .for_each(|v| out.append_option(v.map(interval_text)));
        } else if let DataType::Timestamp(_, tz) = a.data_type() {
            let zone = tz
                .is_some()
                .then(|| self.zone.as_ref().map(|z| *z.lock()).unwrap_or_default());
            let micros = cast(a, &DataType::Timestamp(TimeUnit::Microsecond, None))?;
            for v in micros.as_primitive::<TimestampMicrosecondType>().iter() {
                let Some(us) = v else {
                    out.append_null();
                    continue;
                };
                let text = match zone {
                    Some(tz) => timestamptz_text(us, tz),
                    None => timestamp_text(us),
                };
                let Some(text) = text else {
                    return Err(DataFusionError::Execution(format!(
                        "timestamp out of range: {us} microseconds"
                    )));
                };
                out.append_value(text);
            }
        } else {
            return internal_err!("{} got {}", self.name, a.data_type());
        }
        Ok(Arc::new(out.finish()))
    }
}

impl PartialEq for TextOut {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
            && match (&self.zone, &other.zone) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            }
    }
}

impl Eq for TextOut {}

impl std::hash::Hash for TextOut {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state);
    }
}

static FLOAT8_OUT: LazyLock<ScalarUDF> =
    LazyLock::new(|| TextOut::udf("float8out", Some(DataType::Float64)));

static FLOAT4_OUT: LazyLock<ScalarUDF> =
    LazyLock::new(|| TextOut::udf("float4out", Some(DataType::Float32)));

static INTERVAL_OUT: LazyLock<ScalarUDF> = LazyLock::new(|| {
    TextOut::udf(
        "interval_out",
        Some(DataType::Interval(IntervalUnit::MonthDayNano)),
    )
});

static TIMESTAMP_OUT: LazyLock<ScalarUDF> = LazyLock::new(|| TextOut::udf("timestamp_out", None));

impl ScalarUDFImpl for TextOut {
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
        let out = self.texts(&arg.to_array(args.number_rows)?)?;
        Ok(match arg {
            ColumnarValue::Scalar(_) => {
                ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?)
            }
            ColumnarValue::Array(_) => ColumnarValue::Array(out),
        })
    }
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
            (Ok(DataType::Timestamp(_, None)), _) => Some(&*TIMESTAMP_OUT),
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
    let timestamptz_out = Arc::new(ScalarUDF::new_from_impl(TextOut {
        name: "timestamptz_out",
        zone: Some(zone),
        // Stable, not immutable: the text depends on the session's TimeZone.
        signature: Signature::any(1, Volatility::Stable),
    }));
    crate::arithmetic::register_rewrite(ctx, Arc::new(FloatText { timestamptz_out }))
}
