//! `numeric` division and `numeric` to integer casts as PostgreSQL computes them.
//!
//! Division, why: DataFusion divides two Decimal128 values into a scale of `max(6, s1 + p2 + 1)`, so
//! `10 / 4.0` printed `2.500000` and `1 / 3.0` gave six digits, fewer than the `float8` it
//! replaced once constants like `4.0` became `numeric` (as PostgreSQL types them). PostgreSQL
//! (`select_div_scale`) gives a quotient at least 16 significant digits, and never fewer
//! fraction digits than either operand: `10 / 4.0` is `2.5000000000000000`.
//!
//! PostgreSQL picks the digits per value (more for a small quotient, fewer for a large one);
//! an Arrow column has one scale, so braid takes the one PostgreSQL takes for a quotient from
//! 1 to 9999 — `max(16, s1, s2)`, lowered only as far as the integer digits the operands can
//! produce need (38 in all). The quotient is rounded half away from zero, as PostgreSQL's.
//!
//! Casts: `2.5::int` is 3 in PostgreSQL (rounded half away from zero), where Arrow's cast
//! truncates to 2; a value out of the integer's range is 22003 `integer out of range`.
//!
//! What must stay true: the rewrite ([`NumericOps`]) keeps the output name of what it replaces
//! (`a / b`; a cast names itself after its operand), like the checked arithmetic in
//! [`crate::arithmetic`]; division by zero is 22012 and a quotient that does not fit 38 digits
//! is 22003, never a wrapped or truncated value.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Decimal128Array};
use datafusion::arrow::datatypes::{i256, DataType, Decimal128Type, Field, FieldRef};
use datafusion::arrow::error::ArrowError;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::Transformed;
use datafusion::common::{internal_err, DFSchema, Result as DfResult};
use datafusion::error::DataFusionError;
use datafusion::logical_expr::expr_rewriter::FunctionRewrite;
use datafusion::logical_expr::{
    BinaryExpr, ColumnarValue, Expr, ExprSchemable, Operator, ReturnFieldArgs, ScalarFunctionArgs,
    ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::prelude::SessionContext;

use crate::error::Error;

/// Fraction digits PostgreSQL gives a quotient from 1 to 9999 (`NUMERIC_MIN_SIG_DIGITS`).
const MIN_SIG_DIGITS: i8 = 16;
const MAX_PRECISION: u8 = 38;

/// Precision and scale of an operand that division reads as `numeric`: a decimal as it is,
/// an integer as a decimal without fraction digits.
fn numeric_shape(ty: &DataType) -> Option<(u8, i8)> {
    match ty {
        DataType::Decimal128(p, s) if *s >= 0 => Some((*p, *s)),
        DataType::Int8 | DataType::Int16 => Some((5, 0)),
        DataType::Int32 => Some((10, 0)),
        DataType::Int64 => Some((19, 0)),
        _ => None,
    }
}

/// The quotient's scale for operands of these shapes (see the module comment).
fn quotient_scale((p1, s1): (u8, i8), (_, s2): (u8, i8)) -> i8 {
    let want = MIN_SIG_DIGITS.max(s1).max(s2);
    // Integer digits of the largest quotient: the dividend's, plus one per fraction digit of
    // the divisor (dividing by 0.01 multiplies by 100).
    let int_digits = i16::from(p1) - i16::from(s1) + i16::from(s2);
    let room = i16::from(MAX_PRECISION) - int_digits;
    let floor = i16::from(s1.max(s2));
    i16::from(want)
        .min(room)
        .max(floor)
        .clamp(0, i16::from(MAX_PRECISION)) as i8
}

/// `a / b` where one operand is `numeric` and the other `numeric` or an integer.
#[derive(Debug, PartialEq, Eq, Hash)]
struct NumericDiv {
    signature: Signature,
}

impl ScalarUDFImpl for NumericDiv {
    fn name(&self) -> &str {
        "numeric_div"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> DfResult<DataType> {
        match args {
            [a, b] => match (numeric_shape(a), numeric_shape(b)) {
                (Some(x), Some(y)) => Ok(DataType::Decimal128(MAX_PRECISION, quotient_scale(x, y))),
                _ => internal_err!("numeric_div of {a} and {b}"),
            },
            _ => internal_err!("numeric_div takes 2 arguments"),
        }
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> DfResult<FieldRef> {
        let types: Vec<DataType> = args
            .arg_fields
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        let nullable = args.arg_fields.iter().any(|f| f.is_nullable());
        Ok(Arc::new(Field::new(
            self.name(),
            self.return_type(&types)?,
            nullable,
        )))
    }

    /// The operator's own name, so the rewrite changes no column name in a plan.
    fn schema_name(&self, args: &[Expr]) -> DfResult<String> {
        match args {
            [a, b] => Ok(format!("{} / {}", a.schema_name(), b.schema_name())),
            _ => internal_err!("numeric_div takes 2 arguments"),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let n = args.number_rows;
        let [a, b] = args.args.as_slice() else {
            return internal_err!("numeric_div takes 2 arguments");
        };
        let (Some(x), Some(y)) = (numeric_shape(&a.data_type()), numeric_shape(&b.data_type()))
        else {
            return internal_err!("numeric_div of {} and {}", a.data_type(), b.data_type());
        };
        let scale = quotient_scale(x, y);
        let scalar = matches!((a, b), (ColumnarValue::Scalar(_), ColumnarValue::Scalar(_)));
        let left = as_scaled(&a.to_array(n)?)?;
        let right = as_scaled(&b.to_array(n)?)?;
        let out = divide(&left, x.1, &right, y.1, scale)?;
        let out: ArrayRef = Arc::new(out.with_precision_and_scale(MAX_PRECISION, scale)?);
        Ok(if scalar {
            ColumnarValue::Scalar(datafusion::common::ScalarValue::try_from_array(&out, 0)?)
        } else {
            ColumnarValue::Array(out)
        })
    }
}

/// An operand as unscaled 128-bit integers (an integer column has scale 0).
fn as_scaled(a: &ArrayRef) -> DfResult<Decimal128Array> {
    match a.data_type() {
        DataType::Decimal128(_, _) => Ok(a.as_primitive::<Decimal128Type>().clone()),
        _ => {
            let cast = datafusion::arrow::compute::cast(a, &DataType::Decimal128(38, 0))?;
            Ok(cast.as_primitive::<Decimal128Type>().clone())
        }
    }
}

/// `a / b` (unscaled values at scales `sa` and `sb`) at scale `scale`, rounded half away
/// from zero.
fn divide(
    a: &Decimal128Array,
    sa: i8,
    b: &Decimal128Array,
    sb: i8,
    scale: i8,
) -> DfResult<Decimal128Array> {
    // a/10^sa ÷ b/10^sb = (a · 10^(scale + sb − sa) ÷ b) / 10^scale.
    let shift = i32::from(scale) + i32::from(sb) - i32::from(sa);
    let ten = i256::from_i128(10);
    let max = i256::from_i128(10_i128.pow(u32::from(MAX_PRECISION)) - 1);
    let mut out = Vec::with_capacity(a.len());
    for i in 0..a.len() {
        if a.is_null(i) || b.is_null(i) {
            out.push(None);
            continue;
        }
        let d = i256::from_i128(b.value(i));
        if d == i256::ZERO {
            return Err(DataFusionError::ArrowError(
                Box::new(ArrowError::DivideByZero),
                None,
            ));
        }
        let mut num = i256::from_i128(a.value(i));
        let mut den = d;
        // A negative shift (an operand with more fraction digits than the quotient keeps)
        // scales the divisor up instead. A shift can reach 76 digits (numeric(38,0) divided
        // by numeric(38,38)), past 256 bits for a large operand: that is 22003, never a
        // wrapped value.
        let overflow = || Error::OutOfRange("numeric").into_datafusion();
        for _ in 0..shift.max(0) {
            num = num.checked_mul(ten).ok_or_else(overflow)?;
        }
        for _ in 0..(-shift).max(0) {
            den = den.checked_mul(ten).ok_or_else(overflow)?;
        }
        let q = num.wrapping_div(den);
        let r = num.wrapping_rem(den);
        let twice = r.wrapping_abs().wrapping_mul(i256::from_i128(2));
        let q = if twice >= den.wrapping_abs() {
            if (num < i256::ZERO) != (den < i256::ZERO) {
                q.wrapping_sub(i256::ONE)
            } else {
                q.wrapping_add(i256::ONE)
            }
        } else {
            q
        };
        if q > max || q < max.wrapping_neg() {
            return Err(Error::OutOfRange("numeric").into_datafusion());
        }
        out.push(q.to_i128());
    }
    Ok(Decimal128Array::from(out))
}

/// A `numeric` with fraction digits cast to `smallint`, `integer` or `bigint`.
#[derive(Debug, PartialEq, Eq, Hash)]
struct NumericToInt {
    name: String,
    target: DataType,
    signature: Signature,
}

impl ScalarUDFImpl for NumericToInt {
    fn name(&self) -> &str {
        &self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(self.target.clone())
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> DfResult<FieldRef> {
        let nullable = args.arg_fields.iter().any(|f| f.is_nullable());
        Ok(Arc::new(Field::new(
            self.name(),
            self.target.clone(),
            nullable,
        )))
    }

    /// A cast's name: its operand's.
    fn schema_name(&self, args: &[Expr]) -> DfResult<String> {
        match args {
            [a] => Ok(a.schema_name().to_string()),
            _ => internal_err!("{} takes 1 argument", self.name),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let n = args.number_rows;
        let [a] = args.args.as_slice() else {
            return internal_err!("{} takes 1 argument", self.name);
        };
        let DataType::Decimal128(_, scale) = a.data_type() else {
            return internal_err!("{} of {}", self.name, a.data_type());
        };
        let scalar = matches!(a, ColumnarValue::Scalar(_));
        let array = a.to_array(n)?;
        let values = array.as_primitive::<Decimal128Type>();
        let unit = 10_i128.pow(u32::from(scale.max(0).unsigned_abs()));
        let (lo, hi, type_name) = match self.target {
            DataType::Int16 => (i128::from(i16::MIN), i128::from(i16::MAX), "smallint"),
            DataType::Int32 => (i128::from(i32::MIN), i128::from(i32::MAX), "integer"),
            _ => (i128::from(i64::MIN), i128::from(i64::MAX), "bigint"),
        };
        let mut out = Vec::with_capacity(values.len());
        for v in values.iter() {
            out.push(match v {
                None => None,
                Some(v) => {
                    let (q, r) = (v / unit, v % unit);
                    // |r| * 2 >= unit, without overflow for any 38-digit value.
                    let q = if r.unsigned_abs() >= unit.unsigned_abs() - r.unsigned_abs() {
                        q + v.signum()
                    } else {
                        q
                    };
                    if q < lo || q > hi {
                        return Err(Error::OutOfRange(type_name).into_datafusion());
                    }
                    Some(q)
                }
            });
        }
        let out: ArrayRef = match self.target {
            DataType::Int16 => Arc::new(datafusion::arrow::array::Int16Array::from_iter(
                out.into_iter().map(|v| v.map(|v| v as i16)),
            )),
            DataType::Int32 => Arc::new(datafusion::arrow::array::Int32Array::from_iter(
                out.into_iter().map(|v| v.map(|v| v as i32)),
            )),
            _ => Arc::new(datafusion::arrow::array::Int64Array::from_iter(
                out.into_iter().map(|v| v.map(|v| v as i64)),
            )),
        };
        Ok(if scalar {
            ColumnarValue::Scalar(datafusion::common::ScalarValue::try_from_array(&out, 0)?)
        } else {
            ColumnarValue::Array(out)
        })
    }
}

/// Rewrites `a / b` on `numeric` operands into `numeric_div`, and casts of a `numeric` with
/// fraction digits to an integer type into `numeric_int2/4/8`.
#[derive(Debug)]
pub(crate) struct NumericOps {
    div: Arc<ScalarUDF>,
    /// `numeric_int2`, `numeric_int4`, `numeric_int8`.
    to_int: [Arc<ScalarUDF>; 3],
}

impl FunctionRewrite for NumericOps {
    fn name(&self) -> &str {
        "braid_numeric_ops"
    }

    fn rewrite(
        &self,
        expr: Expr,
        schema: &DFSchema,
        _config: &ConfigOptions,
    ) -> DfResult<Transformed<Expr>> {
        if let Expr::Cast(c) = &expr {
            let f = match c.field.data_type() {
                DataType::Int16 => Some(&self.to_int[0]),
                DataType::Int32 => Some(&self.to_int[1]),
                DataType::Int64 => Some(&self.to_int[2]),
                _ => None,
            };
            if let (Some(f), Ok(DataType::Decimal128(_, s))) = (f, c.expr.get_type(schema)) {
                if s > 0 {
                    let Expr::Cast(c) = expr else {
                        return Ok(Transformed::no(expr));
                    };
                    return Ok(Transformed::yes(f.call(vec![*c.expr])));
                }
            }
        }
        let Expr::BinaryExpr(b) = expr else {
            return Ok(Transformed::no(expr));
        };
        let types = (b.left.get_type(schema), b.right.get_type(schema));
        let rewrite = b.op == Operator::Divide
            && match &types {
                (Ok(l), Ok(r)) => {
                    matches!(
                        (l, r),
                        (DataType::Decimal128(..), _) | (_, DataType::Decimal128(..))
                    ) && numeric_shape(l).is_some()
                        && numeric_shape(r).is_some()
                }
                _ => false,
            };
        if !rewrite {
            return Ok(Transformed::no(Expr::BinaryExpr(b)));
        }
        let BinaryExpr { left, right, .. } = b;
        Ok(Transformed::yes(self.div.call(vec![*left, *right])))
    }
}

/// Makes `numeric / numeric` and `numeric::int` in `ctx` PostgreSQL's.
pub(crate) fn register(ctx: &SessionContext) -> DfResult<()> {
    let div = Arc::new(ScalarUDF::new_from_impl(NumericDiv {
        signature: Signature::any(2, Volatility::Immutable),
    }));
    let to_int = |name: &str, target: DataType| {
        Arc::new(ScalarUDF::new_from_impl(NumericToInt {
            name: name.to_string(),
            target,
            signature: Signature::any(1, Volatility::Immutable),
        }))
    };
    crate::arithmetic::register_rewrite(
        ctx,
        Arc::new(NumericOps {
            div,
            to_int: [
                to_int("numeric_int2", DataType::Int16),
                to_int("numeric_int4", DataType::Int32),
                to_int("numeric_int8", DataType::Int64),
            ],
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn div(a: i128, sa: i8, b: i128, sb: i8, scale: i8) -> DfResult<Option<i128>> {
        let x = Decimal128Array::from(vec![a]);
        let y = Decimal128Array::from(vec![b]);
        let q = divide(&x, sa, &y, sb, scale)?;
        Ok((!q.is_null(0)).then(|| q.value(0)))
    }

    #[test]
    fn scales_follow_postgresql_for_ordinary_quotients() {
        // 10 / 4.0: numeric(19,0) by numeric(2,1) gives 16 fraction digits.
        assert_eq!(quotient_scale((19, 0), (2, 1)), 16);
        // A dividend with more fraction digits keeps them.
        assert_eq!(quotient_scale((30, 20), (2, 1)), 20);
        // Wide operands lower the scale so the integer digits fit in 38.
        assert_eq!(quotient_scale((38, 0), (10, 2)), 2);
    }

    #[test]
    fn rounds_half_away_from_zero() {
        // 2 / 3 at 4 digits: 0.6667; -2 / 3: -0.6667; 1 / 8 at 2 digits: 0.13 (0.125 rounds up).
        assert_eq!(div(2, 0, 3, 0, 4).ok().flatten(), Some(6667));
        assert_eq!(div(-2, 0, 3, 0, 4).ok().flatten(), Some(-6667));
        assert_eq!(div(1, 0, 8, 0, 2).ok().flatten(), Some(13));
        assert_eq!(div(-1, 0, 8, 0, 2).ok().flatten(), Some(-13));
        // 10 / 4.0 = 2.5 at 16 digits.
        assert_eq!(
            div(10, 0, 40, 1, 16).ok().flatten(),
            Some(25_000_000_000_000_000)
        );
    }

    #[test]
    fn division_by_zero_and_overflow_are_errors() {
        assert!(div(1, 0, 0, 0, 16).is_err());
        // 10^37 / 0.01 needs 40 digits.
        assert!(div(10_i128.pow(37), 0, 1, 2, 0).is_err());
        // A 76-digit shift of a 38-digit dividend passes 256 bits: an error, not a wrapped
        // quotient.
        assert!(div(10_i128.pow(37), 0, 10_i128.pow(37), 38, 38).is_err());
    }
}
