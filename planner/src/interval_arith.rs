//! `interval * number`, `number * interval` and `interval / number`, computed as PostgreSQL
//! computes them (its `interval_mul`, `mul_d_interval` and `interval_div`).
//!
//! DataFusion has no such operator: its type coercion fails `interval '1 minute' * 5` with
//! "Cannot get result type for temporal operation", where a time-series query names its
//! window so (`now() - interval '1 minute' * $1`). [`IntervalPlanner`], an `ExprPlanner` the SQL
//! planner consults for every binary operator (statements, DEFAULT expressions alike), plans
//! such a product or quotient as a call of one of PostgreSQL's functions, which takes the
//! number as `double precision`, before DataFusion types the operator. Nothing is left to
//! rewrite later, so no analyzer rule walks every plan for it.
//!
//! PostgreSQL's arithmetic, which this copies step for step: months and days are multiplied
//! separately and truncated; the fraction of a month cascades down into days (30 to a month)
//! and the fraction of a day into the time part (24 hours to a day), never up; the time part
//! is rounded to the microsecond. So `interval '1 month' * 1.5` is `1 mon 15 days` and
//! `interval '1 day' / 3` is `08:00:00`. A result outside the interval's range is 22008
//! `interval out of range`; division by zero is 22012.
//!
//! What must stay true: a rewritten expression keeps the output name of the operator it
//! replaces (`a * b`), so plans, column references above it and `?column?` naming do not
//! change.

use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Decimal128Array, IntervalMonthDayNanoArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    DataType, Field, FieldRef, Float64Type, IntervalMonthDayNano, IntervalMonthDayNanoType,
    IntervalUnit,
};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::Transformed;
use datafusion::common::{internal_err, DFSchema, Result as DfResult, ScalarValue};
use datafusion::execution::FunctionRegistry;
use datafusion::logical_expr::expr::Placeholder;
use datafusion::logical_expr::planner::{ExprPlanner, PlannerResult, RawBinaryExpr};
use datafusion::logical_expr::LogicalPlan;
use datafusion::logical_expr::{
    binary_expr, ColumnarValue, Expr, ExprSchemable, Operator, ReturnFieldArgs, ScalarFunctionArgs,
    ScalarUDF, ScalarUDFImpl, Signature, TypeSignature, Volatility,
};
use datafusion::optimizer::AnalyzerRule;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::BinaryOperator as SqlBinaryOperator;

use crate::error::Error;

const INTERVAL: DataType = DataType::Interval(IntervalUnit::MonthDayNano);

/// PostgreSQL's `DAYS_PER_MONTH` and `SECS_PER_DAY`, the factors fractions cascade down by.
const DAYS_PER_MONTH: f64 = 30.0;
const SECS_PER_DAY: f64 = 86_400.0;
const USECS_PER_SEC: f64 = 1_000_000.0;

/// PostgreSQL's `TSROUND`: to the microsecond, so that float error does not make a whole
/// number of days 0.9999999 of one.
fn ts_round(x: f64) -> f64 {
    (x * USECS_PER_SEC).round_ties_even() / USECS_PER_SEC
}

fn out_of_range() -> datafusion::error::DataFusionError {
    Error::IntervalOutOfRange.into_datafusion()
}

fn fits_i32(x: f64) -> bool {
    !x.is_nan() && x >= f64::from(i32::MIN) && x < -f64::from(i32::MIN)
}

/// `span * factor` (`span / (1 / factor)` when `divide`), as PostgreSQL's `interval_mul`
/// and `interval_div` compute it. The time part is whole microseconds, as PostgreSQL keeps it.
fn scale(span: IntervalMonthDayNano, factor: f64, divide: bool) -> DfResult<IntervalMonthDayNano> {
    if divide && factor == 0.0 {
        return Err(datafusion::error::DataFusionError::ArrowError(
            Box::new(datafusion::arrow::error::ArrowError::DivideByZero),
            None,
        ));
    }
    let apply = |x: f64| if divide { x / factor } else { x * factor };
    let month = apply(f64::from(span.months));
    let day = apply(f64::from(span.days));
    if !fits_i32(month) || !fits_i32(day) {
        return Err(out_of_range());
    }
    // Truncation toward zero, as C's (int32) cast.
    let (result_month, mut result_day) = (month as i32, day as i32);
    let month_remainder_days = ts_round((month - f64::from(result_month)) * DAYS_PER_MONTH);
    let mut sec_remainder = ts_round(
        (day - f64::from(result_day) + month_remainder_days - month_remainder_days.trunc())
            * SECS_PER_DAY,
    );
    if sec_remainder.abs() >= SECS_PER_DAY {
        let whole_days = (sec_remainder / SECS_PER_DAY).trunc();
        result_day = result_day
            .checked_add(whole_days as i32)
            .ok_or_else(out_of_range)?;
        sec_remainder -= whole_days * SECS_PER_DAY;
    }
    result_day = result_day
        .checked_add(month_remainder_days as i32)
        .ok_or_else(out_of_range)?;
    // PostgreSQL's time part is microseconds; Arrow's is nanoseconds.
    let usecs = apply(span.nanoseconds.div_euclid(1000) as f64) + sec_remainder * USECS_PER_SEC;
    let usecs = usecs.round_ties_even();
    if usecs.is_nan() || usecs.abs() >= 9.2e18 / 1000.0 {
        return Err(out_of_range());
    }
    Ok(IntervalMonthDayNano::new(
        result_month,
        result_day,
        (usecs as i64).checked_mul(1000).ok_or_else(out_of_range)?,
    ))
}

/// PostgreSQL's text of an interval (IntervalStyle `postgres`, its default): `1 year 2 mons
/// 3 days 04:05:06.5`, `-1 days -02:00:00`, `-1 years +3 days`, `00:00:00`. The time part is
/// whole microseconds, as PostgreSQL keeps it.
pub fn interval_text(v: IntervalMonthDayNano) -> String {
    use std::fmt::Write;
    // PostgreSQL's `EncodeInterval` for IntervalStyle `postgres`: years and months from the
    // months (C's truncating division), the time part split down to microseconds; a field
    // after a negative one says `+` when it is positive.
    let months = i64::from(v.months);
    let time = v.nanoseconds.div_euclid(1000);
    let (year, mon, day) = (months / 12, months % 12, i64::from(v.days));
    let mut out = String::new();
    let mut is_zero = true;
    let mut is_before = false;
    for (value, unit) in [(year, "year"), (mon, "mon"), (day, "day")] {
        if value == 0 {
            continue;
        }
        let _ = write!(
            out,
            "{}{}{value} {unit}{}",
            if is_zero { "" } else { " " },
            if is_before && value > 0 { "+" } else { "" },
            if value != 1 { "s" } else { "" },
        );
        is_before = value < 0;
        is_zero = false;
    }
    if is_zero || time != 0 {
        let abs = time.unsigned_abs();
        let (hour, rest) = (abs / 3_600_000_000, abs % 3_600_000_000);
        let (min, rest) = (rest / 60_000_000, rest % 60_000_000);
        let (sec, fsec) = (rest / 1_000_000, rest % 1_000_000);
        let sign = if time < 0 {
            "-"
        } else if is_before {
            "+"
        } else {
            ""
        };
        let _ = write!(
            out,
            "{}{sign}{hour:02}:{min:02}:{sec:02}",
            if is_zero { "" } else { " " }
        );
        if fsec != 0 {
            let fraction = format!("{fsec:06}");
            let _ = write!(out, ".{}", fraction.trim_end_matches('0'));
        }
    }
    out
}

/// One of PostgreSQL's three functions; which argument is the interval, and whether it
/// divides.
#[derive(Debug, PartialEq, Eq, Hash)]
struct IntervalFn {
    name: &'static str,
    /// The interval is the first argument (`interval_mul`, `interval_div`), else the second
    /// (`mul_d_interval`).
    interval_first: bool,
    divide: bool,
    signature: Signature,
}

impl IntervalFn {
    fn new(name: &'static str, interval_first: bool, divide: bool) -> IntervalFn {
        IntervalFn {
            name,
            interval_first,
            divide,
            signature: Signature::new(TypeSignature::Any(2), Volatility::Immutable),
        }
    }

    fn symbol(&self) -> &'static str {
        if self.divide {
            "/"
        } else {
            "*"
        }
    }
}

static INTERVAL_MUL: LazyLock<Arc<ScalarUDF>> = LazyLock::new(|| {
    Arc::new(ScalarUDF::new_from_impl(IntervalFn::new(
        "interval_mul",
        true,
        false,
    )))
});
static MUL_D_INTERVAL: LazyLock<Arc<ScalarUDF>> = LazyLock::new(|| {
    Arc::new(ScalarUDF::new_from_impl(IntervalFn::new(
        "mul_d_interval",
        false,
        false,
    )))
});
static INTERVAL_DIV: LazyLock<Arc<ScalarUDF>> = LazyLock::new(|| {
    Arc::new(ScalarUDF::new_from_impl(IntervalFn::new(
        "interval_div",
        true,
        true,
    )))
});

impl ScalarUDFImpl for IntervalFn {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> DfResult<DataType> {
        Ok(INTERVAL)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> DfResult<FieldRef> {
        let nullable = args.arg_fields.iter().any(|f| f.is_nullable());
        Ok(Arc::new(Field::new(self.name, INTERVAL, nullable)))
    }

    /// The operator's own name (`t.a * 2`), so that the rewrite changes no column name.
    fn schema_name(&self, args: &[Expr]) -> DfResult<String> {
        match args {
            [a, b] => Ok(format!(
                "{} {} {}",
                a.schema_name(),
                self.symbol(),
                b.schema_name()
            )),
            _ => internal_err!("{} takes 2 arguments", self.name),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let n = args.number_rows;
        let [a, b] = args.args.as_slice() else {
            return internal_err!("{} takes 2 arguments", self.name);
        };
        let (span, factor) = if self.interval_first { (a, b) } else { (b, a) };
        let scalar = matches!(
            (span, factor),
            (ColumnarValue::Scalar(_), ColumnarValue::Scalar(_))
        );
        let span = cast(&span.to_array(n)?, &INTERVAL)?;
        let factor = cast(&factor.to_array(n)?, &DataType::Float64)?;
        let span = span.as_primitive::<IntervalMonthDayNanoType>();
        let factor = factor.as_primitive::<Float64Type>();
        let out = (0..n)
            .map(|i| {
                if span.is_null(i) || factor.is_null(i) {
                    Ok(None)
                } else {
                    scale(span.value(i), factor.value(i), self.divide).map(Some)
                }
            })
            .collect::<DfResult<IntervalMonthDayNanoArray>>()?;
        let out: ArrayRef = Arc::new(out);
        Ok(if scalar {
            ColumnarValue::Scalar(datafusion::common::ScalarValue::try_from_array(&out, 0)?)
        } else {
            ColumnarValue::Array(out)
        })
    }
}

fn is_number(t: &DataType) -> bool {
    t.is_numeric() || *t == DataType::Null
}

/// The call that replaces `left op right` when it multiplies or divides an interval by a
/// number (in either order for `*`); `None` for anything else. An untyped parameter in the
/// number's place is typed `double precision`, as PostgreSQL types it there.
fn interval_call(op: Operator, left: &Expr, right: &Expr, schema: &DFSchema) -> Option<Expr> {
    let ty = |e: &Expr| match e {
        Expr::Placeholder(Placeholder { field: None, .. }) => Some(DataType::Null),
        e => e.get_type(schema).ok(),
    };
    let (l, r) = (ty(left)?, ty(right)?);
    let (function, number_left) = match op {
        Operator::Multiply if l == INTERVAL && is_number(&r) => (&*INTERVAL_MUL, false),
        Operator::Multiply if is_number(&l) && r == INTERVAL => (&*MUL_D_INTERVAL, true),
        Operator::Divide if l == INTERVAL && is_number(&r) => (&*INTERVAL_DIV, false),
        _ => return None,
    };
    let typed = |e: &Expr| match e {
        Expr::Placeholder(Placeholder { id, field: None }) => Expr::Placeholder(Placeholder {
            id: id.clone(),
            field: Some(Arc::new(Field::new(id, DataType::Float64, true))),
        }),
        e => e.clone(),
    };
    let (left, right) = if number_left {
        (typed(left), right.clone())
    } else {
        (left.clone(), typed(right))
    };
    Some(function.call(vec![left, right]))
}

/// Plans `interval * number`, `number * interval` and `interval / number` as PostgreSQL's
/// functions while DataFusion's SQL planner builds the expression: its own typing of the
/// operator would fail before any later rewrite could run.
#[derive(Debug, Default)]
pub struct IntervalPlanner;

impl ExprPlanner for IntervalPlanner {
    fn plan_binary_op(
        &self,
        expr: RawBinaryExpr,
        schema: &DFSchema,
    ) -> DfResult<PlannerResult<RawBinaryExpr>> {
        let op = match expr.op {
            SqlBinaryOperator::Multiply => Operator::Multiply,
            SqlBinaryOperator::Divide => Operator::Divide,
            SqlBinaryOperator::Eq => Operator::Eq,
            SqlBinaryOperator::NotEq => Operator::NotEq,
            SqlBinaryOperator::Lt => Operator::Lt,
            SqlBinaryOperator::LtEq => Operator::LtEq,
            SqlBinaryOperator::Gt => Operator::Gt,
            SqlBinaryOperator::GtEq => Operator::GtEq,
            _ => return Ok(PlannerResult::Original(expr)),
        };
        if !matches!(op, Operator::Multiply | Operator::Divide) {
            let is_interval = |e: &Expr| e.get_type(schema).is_ok_and(|t| t == INTERVAL);
            // The other side of a comparison with an interval is an interval too when it has
            // no type of its own: an untyped `$n`, or a string constant PostgreSQL would read
            // as an interval (`d > '1 day'`).
            let as_interval = |e: Expr| -> Option<Expr> {
                match e {
                    e if is_interval(&e) => Some(e),
                    Expr::Placeholder(Placeholder { id, field: None }) => {
                        let field = Arc::new(Field::new(&id, INTERVAL, true));
                        Some(Expr::Placeholder(Placeholder {
                            id,
                            field: Some(field),
                        }))
                    }
                    e @ Expr::Literal(ScalarValue::Utf8(Some(_)), _) => {
                        Some(datafusion::logical_expr::cast(e, INTERVAL))
                    }
                    _ => None,
                }
            };
            if !is_interval(&expr.left) && !is_interval(&expr.right) {
                return Ok(PlannerResult::Original(expr));
            }
            let (Some(left), Some(right)) = (
                as_interval(expr.left.clone()),
                as_interval(expr.right.clone()),
            ) else {
                return Ok(PlannerResult::Original(expr));
            };
            let value = |e: Expr| INTERVAL_CMP_VALUE.call(vec![e]);
            return Ok(PlannerResult::Planned(binary_expr(
                value(left),
                op,
                value(right),
            )));
        }
        Ok(match interval_call(op, &expr.left, &expr.right, schema) {
            Some(call) => PlannerResult::Planned(call),
            None => PlannerResult::Original(expr),
        })
    }
}

/// `interval_cmp_value(interval)`: the interval as one number, months counted as 30 days and
/// days as 24 hours, which is how PostgreSQL compares intervals (`interval '1 day' =
/// interval '24 hours'` is true, `interval '25:00:00' > interval '1 day'` too), where Arrow
/// compares months, then days, then nanoseconds. An `i128` of nanoseconds, as a decimal.
#[derive(Debug, PartialEq, Eq, Hash)]
struct IntervalCmpValue {
    signature: Signature,
}

const CMP_VALUE: DataType = DataType::Decimal128(38, 0);

impl ScalarUDFImpl for IntervalCmpValue {
    fn name(&self) -> &str {
        "interval_cmp_value"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> DfResult<DataType> {
        Ok(CMP_VALUE)
    }

    /// The interval's own name, so that `a < b` keeps its name.
    fn schema_name(&self, args: &[Expr]) -> DfResult<String> {
        match args {
            [a] => Ok(a.schema_name().to_string()),
            _ => internal_err!("interval_cmp_value takes one argument"),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        const NANOS_PER_DAY: i128 = 86_400_000_000_000;
        let value = |v: IntervalMonthDayNano| {
            (i128::from(v.months) * 30 + i128::from(v.days)) * NANOS_PER_DAY
                + i128::from(v.nanoseconds)
        };
        let [arg] = args.args.as_slice() else {
            return internal_err!("interval_cmp_value takes one argument");
        };
        match arg {
            ColumnarValue::Scalar(ScalarValue::IntervalMonthDayNano(v)) => Ok(
                ColumnarValue::Scalar(ScalarValue::Decimal128(v.map(value), 38, 0)),
            ),
            ColumnarValue::Array(a) => {
                let Some(p) = a.as_primitive_opt::<IntervalMonthDayNanoType>() else {
                    return internal_err!("interval_cmp_value of {}", a.data_type());
                };
                let out: Decimal128Array = p.unary(value);
                Ok(ColumnarValue::Array(Arc::new(
                    out.with_precision_and_scale(38, 0)?,
                )))
            }
            ColumnarValue::Scalar(other) => {
                internal_err!("interval_cmp_value of {}", other.data_type())
            }
        }
    }
}

static INTERVAL_CMP_VALUE: LazyLock<ScalarUDF> = LazyLock::new(|| {
    ScalarUDF::new_from_impl(IntervalCmpValue {
        signature: Signature::exact(vec![INTERVAL], Volatility::Immutable),
    })
});

/// ORDER BY an interval sorts by [`IntervalCmpValue`], as PostgreSQL's btree order does
/// (`1 day` before `25:00:00`), where Arrow would sort months, then days, then nanoseconds.
/// Only the sort key changes: the rows and their columns are the same.
#[derive(Debug)]
struct IntervalOrder;

impl AnalyzerRule for IntervalOrder {
    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> DfResult<LogicalPlan> {
        plan.transform_up_with_subqueries(|p| {
            let LogicalPlan::Sort(mut sort) = p else {
                return Ok(Transformed::no(p));
            };
            let schema = sort.input.schema().clone();
            let mut changed = false;
            for e in &mut sort.expr {
                if e.expr.get_type(&schema).is_ok_and(|t| t == INTERVAL) {
                    let inner =
                        std::mem::replace(&mut e.expr, Expr::Literal(ScalarValue::Null, None));
                    e.expr = INTERVAL_CMP_VALUE.call(vec![inner]);
                    changed = true;
                }
            }
            let plan = LogicalPlan::Sort(sort);
            Ok(if changed {
                Transformed::yes(plan)
            } else {
                Transformed::no(plan)
            })
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "braid_interval_order"
    }
}

/// Makes `interval * number` and `interval / number` in `ctx` work as in PostgreSQL, and
/// intervals compare as in PostgreSQL.
/// ORDER BY an interval sorts as in PostgreSQL.
pub fn register(ctx: &SessionContext) -> DfResult<()> {
    ctx.add_analyzer_rule(Arc::new(IntervalOrder));
    ctx.state_ref()
        .write()
        .register_expr_planner(Arc::new(IntervalPlanner))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iv(months: i32, days: i32, usecs: i64) -> IntervalMonthDayNano {
        IntervalMonthDayNano::new(months, days, usecs * 1000)
    }

    #[test]
    fn fractions_cascade_down_as_in_postgresql() {
        // Each expected value is what PostgreSQL 15 prints for the same product.
        let hour = 3_600_000_000;
        // interval '1 month' * 1.5 = 1 mon 15 days
        assert_eq!(scale(iv(1, 0, 0), 1.5, false).ok(), Some(iv(1, 15, 0)));
        // interval '1 day' / 3 = 08:00:00
        assert_eq!(scale(iv(0, 1, 0), 3.0, true).ok(), Some(iv(0, 0, 8 * hour)));
        // interval '1 hour' * 2.5 = 02:30:00
        assert_eq!(
            scale(iv(0, 0, hour), 2.5, false).ok(),
            Some(iv(0, 0, 5 * hour / 2))
        );
        // interval '1 mon 1 day' * -0.5 = -15 days -12:00:00
        assert_eq!(
            scale(iv(1, 1, 0), -0.5, false).ok(),
            Some(iv(0, -15, -12 * hour))
        );
        // interval '2 days' * 2147483647 overflows the day field.
        assert!(scale(iv(0, 2, 0), 2_147_483_647.0, false).is_err());
        assert!(scale(iv(0, 1, 0), 0.0, true).is_err());
    }
}
