//! Integer arithmetic that fails on overflow, and floating-point arithmetic that fails on
//! overflow, underflow and division by zero, as PostgreSQL's does.
//!
//! DataFusion plans `+`, `-`, `*` and unary minus on integers with Arrow's wrapping kernels
//! (its physical `BinaryExpr` has a `fail_on_overflow` flag, but the physical planner never
//! sets it), so `2147483647::int + 1` would silently be `-2147483648`. PostgreSQL fails such a
//! statement with SQLSTATE 22003 `integer out of range` (`smallint`, `bigint`), and so must
//! braid: a wrong answer is worse than an error.
//!
//! So every such operation on two operands of one integer type is rewritten into a call of
//! one of PostgreSQL's own operator functions (`int4pl`, `int8mul`, `int2um`, ...), which
//! compute the same values and fail with [`Error::OutOfRange`] instead of wrapping. Integer
//! division goes the same way (only for its message: Arrow's division is already checked).
//! The rewrite ([`CheckedIntegerArithmetic`]) is registered twice in every session:
//! - as a function rewrite, which DataFusion applies in `SessionState::create_physical_expr`
//!   — the path braid's prepared fast paths (`rows/point.rs`, `fast_insert.rs`), RETURNING,
//!   ON CONFLICT and DEFAULT take without the analyzer — and at the start of the analyzer;
//! - as an analyzer rule after type coercion ([`AfterCoercion`]), for the operations
//!   whose operands only have one type once coerced (`int_col + 1`), before the optimizer's
//!   constant folding, which then evaluates the checked function too.
//!
//! Floating-point `+ - * /` on two operands of one float type go the same way, into
//! `float8pl`, `float4div` and friends (the same rewrite and function type): PostgreSQL fails
//! `1e308::float8 * 10` with `value out of range: overflow`, `1e-308::float8 * 1e-308` with
//! `... underflow` and `1.5::float8 / 0` with `division by zero`, where IEEE arithmetic (and
//! DataFusion) would return infinity or zero. Infinite or NaN operands give their IEEE
//! results, as there.
//!
//! Paths that simplify an expression themselves before `create_physical_expr` call [`check`]
//! first, so that constant folding cannot wrap either.
//!
//! What must stay true: a rewritten expression keeps the output name of the one it replaces
//! (the functions name themselves as the operator would: `t.a + t.b`), so plans, column
//! references above them and PostgreSQL's `?column?` naming do not change.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{
    new_null_array, Array, ArrayRef, ArrowPrimitiveType, AsArray, PrimitiveArray,
};
use datafusion::arrow::buffer::NullBuffer;
use datafusion::arrow::compute::kernels::numeric;
use datafusion::arrow::datatypes::{
    DataType, Field, FieldRef, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type,
};
use datafusion::arrow::error::ArrowError;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{internal_err, DFSchema, Result as DfResult, ScalarValue};
use datafusion::error::DataFusionError;
use datafusion::execution::FunctionRegistry;
use datafusion::logical_expr::expr_rewriter::FunctionRewrite;
use datafusion::logical_expr::{
    BinaryExpr, ColumnarValue, Expr, ExprSchemable, LogicalPlan, Operator, ReturnFieldArgs,
    ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::optimizer::analyzer::function_rewrite::ApplyFunctionRewrites;
use datafusion::optimizer::simplify_expressions::{ExprSimplifier, SimplifyContext};
use datafusion::optimizer::AnalyzerRule;
use datafusion::prelude::SessionContext;

use crate::Error;

/// PostgreSQL's integer types, as Arrow holds them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum IntType {
    Int2,
    Int4,
    Int8,
}

impl IntType {
    const ALL: [IntType; 3] = [IntType::Int2, IntType::Int4, IntType::Int8];

    fn of(t: &DataType) -> Option<IntType> {
        match t {
            DataType::Int16 => Some(IntType::Int2),
            DataType::Int32 => Some(IntType::Int4),
            DataType::Int64 => Some(IntType::Int8),
            _ => None,
        }
    }

    fn data_type(self) -> DataType {
        match self {
            IntType::Int2 => DataType::Int16,
            IntType::Int4 => DataType::Int32,
            IntType::Int8 => DataType::Int64,
        }
    }

    /// The name PostgreSQL's `... out of range` message uses.
    fn sql_name(self) -> &'static str {
        match self {
            IntType::Int2 => "smallint",
            IntType::Int4 => "integer",
            IntType::Int8 => "bigint",
        }
    }

    /// The prefix of PostgreSQL's operator functions for the type (`int4` in `int4pl`).
    fn function_prefix(self) -> &'static str {
        match self {
            IntType::Int2 => "int2",
            IntType::Int4 => "int4",
            IntType::Int8 => "int8",
        }
    }
}

/// The operations that can overflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Op {
    Add,
    Sub,
    Mul,
    Div,
    Neg,
}

impl Op {
    const ALL: [Op; 5] = [Op::Add, Op::Sub, Op::Mul, Op::Div, Op::Neg];

    fn of(op: Operator) -> Option<Op> {
        match op {
            Operator::Plus => Some(Op::Add),
            Operator::Minus => Some(Op::Sub),
            Operator::Multiply => Some(Op::Mul),
            Operator::Divide => Some(Op::Div),
            _ => None,
        }
    }

    /// The suffix of PostgreSQL's operator function (`pl` in `int4pl`).
    fn function_suffix(self) -> &'static str {
        match self {
            Op::Add => "pl",
            Op::Sub => "mi",
            Op::Mul => "mul",
            Op::Div => "div",
            Op::Neg => "um",
        }
    }

    fn symbol(self) -> &'static str {
        match self {
            Op::Add => "+",
            Op::Sub | Op::Neg => "-",
            Op::Mul => "*",
            Op::Div => "/",
        }
    }

    fn arity(self) -> usize {
        match self {
            Op::Neg => 1,
            _ => 2,
        }
    }
}

/// The types checked functions exist for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum NumType {
    Int(IntType),
    Float(FloatType),
}

impl NumType {
    fn of(t: &DataType) -> Option<NumType> {
        IntType::of(t)
            .map(NumType::Int)
            .or_else(|| FloatType::of(t).map(NumType::Float))
    }

    fn data_type(self) -> DataType {
        match self {
            NumType::Int(t) => t.data_type(),
            NumType::Float(t) => t.data_type(),
        }
    }

    fn function_prefix(self) -> &'static str {
        match self {
            NumType::Int(t) => t.function_prefix(),
            NumType::Float(t) => t.function_prefix(),
        }
    }

    /// The operations PostgreSQL checks on the type (floats: no unary minus, it cannot fail).
    fn ops(self) -> &'static [Op] {
        match self {
            NumType::Int(_) => &Op::ALL,
            NumType::Float(_) => &[Op::Add, Op::Sub, Op::Mul, Op::Div],
        }
    }
}

/// One checked operation on one type: PostgreSQL's `int4pl`, `float8mul` and friends.
#[derive(Debug)]
struct Checked {
    op: Op,
    ty: NumType,
    name: String,
    signature: Signature,
}

impl PartialEq for Checked {
    fn eq(&self, other: &Self) -> bool {
        self.op == other.op && self.ty == other.ty
    }
}

impl Eq for Checked {}

impl Hash for Checked {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.op.hash(state);
        self.ty.hash(state);
    }
}

/// Every checked function, made once: the rewrite runs on every planned expression.
static FUNCTIONS: LazyLock<HashMap<(Op, NumType), ScalarUDF>> = LazyLock::new(|| {
    let mut out = HashMap::new();
    let types = IntType::ALL
        .map(NumType::Int)
        .into_iter()
        .chain(FloatType::ALL.map(NumType::Float));
    for ty in types {
        for &op in ty.ops() {
            let f = Checked {
                op,
                ty,
                name: format!("{}{}", ty.function_prefix(), op.function_suffix()),
                signature: Signature::exact(
                    vec![ty.data_type(); op.arity()],
                    Volatility::Immutable,
                ),
            };
            out.insert((op, ty), ScalarUDF::new_from_impl(f));
        }
    }
    out
});

impl ScalarUDFImpl for Checked {
    fn name(&self) -> &str {
        &self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> DfResult<DataType> {
        Ok(self.ty.data_type())
    }

    /// Null only where an operand can be, like the operator it replaces: a NOT NULL column
    /// plus a constant stays NOT NULL.
    fn return_field_from_args(&self, args: ReturnFieldArgs) -> DfResult<FieldRef> {
        let nullable = args.arg_fields.iter().any(|f| f.is_nullable());
        Ok(Arc::new(Field::new(
            self.name(),
            self.ty.data_type(),
            nullable,
        )))
    }

    /// The operator's own name (`t.a + t.b`, `(- t.a)`), so that the rewrite changes no
    /// column name in a plan.
    fn schema_name(&self, args: &[Expr]) -> DfResult<String> {
        Ok(match args {
            [a] => format!("({} {})", self.op.symbol(), a.schema_name()),
            [a, b] => format!(
                "{} {} {}",
                a.schema_name(),
                self.op.symbol(),
                b.schema_name()
            ),
            _ => return internal_err!("{} takes {} arguments", self.name, self.op.arity()),
        })
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let n = args.number_rows;
        let ty = match self.ty {
            NumType::Int(ty) => ty,
            NumType::Float(FloatType::Float4) => {
                return match args.args.as_slice() {
                    [l, r] => float_binary::<Float32Type>(self.op, l, r, n),
                    _ => internal_err!("{} takes 2 arguments", self.name),
                }
            }
            NumType::Float(FloatType::Float8) => {
                return match args.args.as_slice() {
                    [l, r] => float_binary::<Float64Type>(self.op, l, r, n),
                    _ => internal_err!("{} takes 2 arguments", self.name),
                }
            }
        };
        match (self.op, args.args.as_slice()) {
            (Op::Div, [l, r]) => divide(ty, l, r),
            (Op::Neg, [a]) => match ty {
                IntType::Int2 => negate::<Int16Type>(ty, a),
                IntType::Int4 => negate::<Int32Type>(ty, a),
                IntType::Int8 => negate::<Int64Type>(ty, a),
            },
            (op, [l, r]) => match ty {
                IntType::Int2 => binary::<Int16Type>(op, ty, l, r, n),
                IntType::Int4 => binary::<Int32Type>(op, ty, l, r, n),
                IntType::Int8 => binary::<Int64Type>(op, ty, l, r, n),
            },
            _ => internal_err!("{} takes {} arguments", self.name, self.op.arity()),
        }
    }
}

fn out_of_range(ty: IntType) -> DataFusionError {
    Error::OutOfRange(ty.sql_name()).into_datafusion()
}

/// Wrapping operations that also say whether they wrapped: the kernels below compute a
/// whole batch branch-free and look at the flag once.
trait Overflowing: Copy {
    fn add(self, other: Self) -> (Self, bool);
    fn sub(self, other: Self) -> (Self, bool);
    fn mul(self, other: Self) -> (Self, bool);
    fn neg(self) -> (Self, bool);
}

macro_rules! overflowing {
    ($($t:ty),*) => {$(
        impl Overflowing for $t {
            fn add(self, other: Self) -> (Self, bool) {
                self.overflowing_add(other)
            }
            fn sub(self, other: Self) -> (Self, bool) {
                self.overflowing_sub(other)
            }
            fn mul(self, other: Self) -> (Self, bool) {
                self.overflowing_mul(other)
            }
            fn neg(self) -> (Self, bool) {
                self.overflowing_neg()
            }
        }
    )*};
}

overflowing!(i16, i32, i64);

/// A scalar operand: its value, `None` for NULL.
fn scalar_value<T: ArrowPrimitiveType>(s: &ScalarValue) -> DfResult<Option<T::Native>> {
    let array = s.to_array()?;
    let Some(p) = array.as_primitive_opt::<T>() else {
        return internal_err!(
            "checked arithmetic got {} for {}",
            s.data_type(),
            T::DATA_TYPE
        );
    };
    Ok(p.is_valid(0).then(|| p.value(0)))
}

fn primitive<T: ArrowPrimitiveType>(a: &ArrayRef) -> DfResult<&PrimitiveArray<T>> {
    match a.as_primitive_opt::<T>() {
        Some(p) => Ok(p),
        None => internal_err!(
            "checked arithmetic got {} for {}",
            a.data_type(),
            T::DATA_TYPE
        ),
    }
}

/// The two operands of a checked binary operation, read once for the integer and the float
/// kernels alike: scalars as values, arrays as primitive arrays of one length. `Null`: a NULL
/// scalar operand, which makes the whole result NULL.
enum Operands<'a, T: ArrowPrimitiveType> {
    Scalars(T::Native, T::Native),
    ArrayScalar(&'a PrimitiveArray<T>, T::Native),
    ScalarArray(T::Native, &'a PrimitiveArray<T>),
    Arrays(&'a PrimitiveArray<T>, &'a PrimitiveArray<T>),
    Null { scalar: bool },
}

fn operands<'a, T: ArrowPrimitiveType>(
    l: &'a ColumnarValue,
    r: &'a ColumnarValue,
) -> DfResult<Operands<'a, T>> {
    use ColumnarValue::{Array, Scalar};
    Ok(match (l, r) {
        (Scalar(a), Scalar(b)) => match (scalar_value::<T>(a)?, scalar_value::<T>(b)?) {
            (Some(a), Some(b)) => Operands::Scalars(a, b),
            _ => Operands::Null { scalar: true },
        },
        (Array(a), Scalar(b)) => match scalar_value::<T>(b)? {
            Some(b) => Operands::ArrayScalar(primitive::<T>(a)?, b),
            None => Operands::Null { scalar: false },
        },
        (Scalar(a), Array(b)) => match scalar_value::<T>(a)? {
            Some(a) => Operands::ScalarArray(a, primitive::<T>(b)?),
            None => Operands::Null { scalar: false },
        },
        (Array(a), Array(b)) => {
            let (a, b) = (primitive::<T>(a)?, primitive::<T>(b)?);
            if a.len() != b.len() {
                return internal_err!("checked arithmetic on arrays of different lengths");
            }
            Operands::Arrays(a, b)
        }
    })
}

/// A non-NULL scalar result.
fn scalar_result<T: ArrowPrimitiveType>(v: T::Native) -> DfResult<ColumnarValue> {
    Ok(ColumnarValue::Scalar(ScalarValue::new_primitive::<T>(
        Some(v),
        &T::DATA_TYPE,
    )?))
}

/// The NULL result of a batch of `rows` (a NULL scalar operand).
fn null_result<T: ArrowPrimitiveType>(scalar: bool, rows: usize) -> DfResult<ColumnarValue> {
    Ok(if scalar {
        ColumnarValue::Scalar(ScalarValue::try_from(T::DATA_TYPE)?)
    } else {
        ColumnarValue::Array(new_null_array(&T::DATA_TYPE, rows))
    })
}

/// Builds the result of a batch computed with wrapping `results`; `wrapped_at(i)` says whether
/// row `i` overflowed. Values under NULLs are whatever the buffers hold, so an overflow there
/// is not an error: only when some row overflowed are the non-NULL rows checked one by one.
fn finish<T: ArrowPrimitiveType>(
    ty: IntType,
    len: usize,
    results: impl Iterator<Item = (T::Native, bool)>,
    nulls: Option<NullBuffer>,
    wrapped_at: impl Fn(usize) -> bool,
) -> DfResult<ColumnarValue>
where
    T::Native: Overflowing,
{
    // A plain loop into a buffer of the right size, with the flags OR-ed together: no
    // branch per row, so it vectorizes.
    let mut wrapped = false;
    let mut values = vec![T::Native::default(); len];
    for (slot, (v, o)) in values.iter_mut().zip(results) {
        *slot = v;
        wrapped |= o;
    }
    if wrapped {
        let real = match &nulls {
            None => true,
            Some(n) => n.valid_indices().any(wrapped_at),
        };
        if real {
            return Err(out_of_range(ty));
        }
    }
    Ok(ColumnarValue::Array(Arc::new(PrimitiveArray::<T>::new(
        values.into(),
        nulls,
    ))))
}

fn binary<T: ArrowPrimitiveType>(
    op: Op,
    ty: IntType,
    l: &ColumnarValue,
    r: &ColumnarValue,
    rows: usize,
) -> DfResult<ColumnarValue>
where
    T::Native: Overflowing,
{
    // Each operation is its own instance of the kernel (not a function pointer), so that the
    // per-row operation inlines and the loop vectorizes as Arrow's wrapping kernels do.
    match op {
        Op::Add => binary_with::<T, _>(ty, l, r, rows, <T::Native as Overflowing>::add),
        Op::Sub => binary_with::<T, _>(ty, l, r, rows, <T::Native as Overflowing>::sub),
        Op::Mul => binary_with::<T, _>(ty, l, r, rows, <T::Native as Overflowing>::mul),
        Op::Div | Op::Neg => internal_err!("{op:?} is not a wrapping binary operation"),
    }
}

fn binary_with<T: ArrowPrimitiveType, F>(
    ty: IntType,
    l: &ColumnarValue,
    r: &ColumnarValue,
    rows: usize,
    f: F,
) -> DfResult<ColumnarValue>
where
    T::Native: Overflowing,
    F: Fn(T::Native, T::Native) -> (T::Native, bool),
{
    match operands::<T>(l, r)? {
        Operands::Null { scalar } => null_result::<T>(scalar, rows),
        Operands::Scalars(a, b) => match f(a, b) {
            (_, true) => Err(out_of_range(ty)),
            (v, false) => scalar_result::<T>(v),
        },
        Operands::ArrayScalar(a, b) => {
            let results = a.values().iter().map(|&x| f(x, b));
            finish::<T>(ty, a.len(), results, a.nulls().cloned(), |i| {
                f(a.value(i), b).1
            })
        }
        Operands::ScalarArray(a, b) => {
            let results = b.values().iter().map(|&y| f(a, y));
            finish::<T>(ty, b.len(), results, b.nulls().cloned(), |i| {
                f(a, b.value(i)).1
            })
        }
        Operands::Arrays(a, b) => {
            let results = a
                .values()
                .iter()
                .zip(b.values().iter())
                .map(|(&x, &y)| f(x, y));
            let nulls = NullBuffer::union(a.nulls(), b.nulls());
            finish::<T>(ty, a.len(), results, nulls, |i| f(a.value(i), b.value(i)).1)
        }
    }
}

fn negate<T: ArrowPrimitiveType>(ty: IntType, a: &ColumnarValue) -> DfResult<ColumnarValue>
where
    T::Native: Overflowing,
{
    match a {
        ColumnarValue::Scalar(s) => match scalar_value::<T>(s)? {
            None => Ok(ColumnarValue::Scalar(s.clone())),
            Some(v) => match v.neg() {
                (_, true) => Err(out_of_range(ty)),
                (v, false) => scalar_result::<T>(v),
            },
        },
        ColumnarValue::Array(a) => {
            let a = primitive::<T>(a)?;
            let results = a.values().iter().map(|&x| x.neg());
            finish::<T>(ty, a.len(), results, a.nulls().cloned(), |i| {
                a.value(i).neg().1
            })
        }
    }
}

/// Integer division: Arrow's kernel already refuses `MIN / -1` and division by zero; only
/// the overflow's message becomes PostgreSQL's (division by zero keeps its own, 22012).
fn divide(ty: IntType, l: &ColumnarValue, r: &ColumnarValue) -> DfResult<ColumnarValue> {
    let scalars = matches!((l, r), (ColumnarValue::Scalar(_), ColumnarValue::Scalar(_)));
    let datum = |v: &ColumnarValue| -> DfResult<Box<dyn datafusion::arrow::array::Datum>> {
        Ok(match v {
            ColumnarValue::Array(a) => Box::new(a.clone()),
            ColumnarValue::Scalar(s) => Box::new(s.to_scalar()?),
        })
    };
    let (l, r) = (datum(l)?, datum(r)?);
    let out = match numeric::div(l.as_ref(), r.as_ref()) {
        Ok(out) => out,
        Err(ArrowError::ArithmeticOverflow(_)) => return Err(out_of_range(ty)),
        Err(e) => return Err(DataFusionError::ArrowError(Box::new(e), None)),
    };
    if scalars {
        Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?))
    } else {
        Ok(ColumnarValue::Array(out))
    }
}

/// PostgreSQL's floating-point types, as Arrow holds them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum FloatType {
    Float4,
    Float8,
}

impl FloatType {
    const ALL: [FloatType; 2] = [FloatType::Float4, FloatType::Float8];

    fn of(t: &DataType) -> Option<FloatType> {
        match t {
            DataType::Float32 => Some(FloatType::Float4),
            DataType::Float64 => Some(FloatType::Float8),
            _ => None,
        }
    }

    fn data_type(self) -> DataType {
        match self {
            FloatType::Float4 => DataType::Float32,
            FloatType::Float8 => DataType::Float64,
        }
    }

    fn function_prefix(self) -> &'static str {
        match self {
            FloatType::Float4 => "float4",
            FloatType::Float8 => "float8",
        }
    }
}

/// Why a floating-point operation failed, as PostgreSQL's `check_float8_val` and
/// `float8div` decide it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FloatFault {
    Overflow,
    Underflow,
    DivisionByZero,
}

impl FloatFault {
    fn error(self) -> DataFusionError {
        match self {
            FloatFault::Overflow => Error::FloatOutOfRange("overflow").into_datafusion(),
            FloatFault::Underflow => Error::FloatOutOfRange("underflow").into_datafusion(),
            FloatFault::DivisionByZero => {
                DataFusionError::ArrowError(Box::new(ArrowError::DivideByZero), None)
            }
        }
    }
}

/// One checked operation on one float type: its IEEE result and the fault PostgreSQL reports.
trait CheckedFloatOp: Copy + Default {
    fn checked(op: Op, a: Self, b: Self) -> (Self, Option<FloatFault>);
}

macro_rules! checked_float {
    ($($t:ty),*) => {$(
        impl CheckedFloatOp for $t {
            fn checked(op: Op, a: Self, b: Self) -> (Self, Option<FloatFault>) {
                let finite = a.is_finite() && b.is_finite();
                match op {
                    Op::Add | Op::Sub => {
                        let r = if op == Op::Add { a + b } else { a - b };
                        (r, (r.is_infinite() && finite).then_some(FloatFault::Overflow))
                    }
                    Op::Mul => {
                        let r = a * b;
                        let fault = if r.is_infinite() && finite {
                            Some(FloatFault::Overflow)
                        } else if r == 0.0 && a != 0.0 && b != 0.0 {
                            Some(FloatFault::Underflow)
                        } else {
                            None
                        };
                        (r, fault)
                    }
                    Op::Div => {
                        if b == 0.0 && !a.is_nan() {
                            return (0.0, Some(FloatFault::DivisionByZero));
                        }
                        let r = a / b;
                        let fault = if r.is_infinite() && !a.is_infinite() {
                            Some(FloatFault::Overflow)
                        } else if r == 0.0 && a != 0.0 && !b.is_infinite() {
                            Some(FloatFault::Underflow)
                        } else {
                            None
                        };
                        (r, fault)
                    }
                    Op::Neg => (-a, None),
                }
            }
        }
    )*};
}

checked_float!(f32, f64);

/// A checked float operation over a batch. The values are computed in one pass with the
/// faults OR-ed into one flag; only when some row faulted are the non-NULL rows looked at one
/// by one for the first real fault (a value under a NULL is no row).
fn float_binary<T: ArrowPrimitiveType>(
    op: Op,
    l: &ColumnarValue,
    r: &ColumnarValue,
    rows: usize,
) -> DfResult<ColumnarValue>
where
    T::Native: CheckedFloatOp,
{
    let f = |a: T::Native, b: T::Native| <T::Native as CheckedFloatOp>::checked(op, a, b);
    match operands::<T>(l, r)? {
        Operands::Null { scalar } => null_result::<T>(scalar, rows),
        Operands::Scalars(a, b) => match f(a, b) {
            (_, Some(fault)) => Err(fault.error()),
            (v, None) => scalar_result::<T>(v),
        },
        Operands::ArrayScalar(a, b) => {
            float_finish::<T, _>(a.len(), a.nulls().cloned(), |i| f(a.value(i), b))
        }
        Operands::ScalarArray(a, b) => {
            float_finish::<T, _>(b.len(), b.nulls().cloned(), |i| f(a, b.value(i)))
        }
        Operands::Arrays(a, b) => {
            let nulls = NullBuffer::union(a.nulls(), b.nulls());
            float_finish::<T, _>(a.len(), nulls, |i| f(a.value(i), b.value(i)))
        }
    }
}

fn float_finish<T: ArrowPrimitiveType, F>(
    len: usize,
    nulls: Option<NullBuffer>,
    at: F,
) -> DfResult<ColumnarValue>
where
    F: Fn(usize) -> (T::Native, Option<FloatFault>),
{
    let mut faulted = false;
    let mut values = vec![T::Native::default(); len];
    for (i, slot) in values.iter_mut().enumerate() {
        let (v, fault) = at(i);
        *slot = v;
        faulted |= fault.is_some();
    }
    if faulted {
        let first = match &nulls {
            None => (0..len).find_map(|i| at(i).1),
            Some(n) => n.valid_indices().find_map(|i| at(i).1),
        };
        if let Some(fault) = first {
            return Err(fault.error());
        }
    }
    Ok(ColumnarValue::Array(Arc::new(PrimitiveArray::<T>::new(
        values.into(),
        nulls,
    ))))
}

/// Rewrites integer `+ - * /` and unary minus whose operands have one integer type, and float
/// `+ - * /` whose operands have one float type, into the checked functions; anything else
/// (mixed types before coercion, unknown parameter types, other types) is left as it is.
#[derive(Debug, Default)]
pub struct CheckedIntegerArithmetic;

fn num_type(e: &Expr, schema: &DFSchema) -> Option<NumType> {
    NumType::of(&e.get_type(schema).ok()?)
}

impl CheckedIntegerArithmetic {
    fn rewrite_one(&self, expr: Expr, schema: &DFSchema) -> Transformed<Expr> {
        match expr {
            Expr::BinaryExpr(b) => {
                let function = match (Op::of(b.op), num_type(&b.left, schema)) {
                    (Some(op), Some(ty)) if num_type(&b.right, schema) == Some(ty) => {
                        FUNCTIONS.get(&(op, ty))
                    }
                    _ => None,
                };
                match function {
                    Some(f) => {
                        let BinaryExpr { left, right, .. } = b;
                        Transformed::yes(f.call(vec![*left, *right]))
                    }
                    None => Transformed::no(Expr::BinaryExpr(b)),
                }
            }
            Expr::Negative(inner) => {
                match num_type(&inner, schema).and_then(|ty| FUNCTIONS.get(&(Op::Neg, ty))) {
                    Some(f) => Transformed::yes(f.call(vec![*inner])),
                    None => Transformed::no(Expr::Negative(inner)),
                }
            }
            other => Transformed::no(other),
        }
    }
}

impl FunctionRewrite for CheckedIntegerArithmetic {
    fn name(&self) -> &str {
        "braid_checked_integer_arithmetic"
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

/// A function rewrite once more as an analyzer rule, after DataFusion's type coercion has
/// given both operands of `int_col + 1` one type, or added the cast of `'v' || x`.
#[derive(Debug)]
pub(crate) struct AfterCoercion {
    name: String,
    rewrites: ApplyFunctionRewrites,
}

impl AnalyzerRule for AfterCoercion {
    fn analyze(&self, plan: LogicalPlan, config: &ConfigOptions) -> DfResult<LogicalPlan> {
        self.rewrites.analyze(plan, config)
    }

    fn name(&self) -> &str {
        &self.name
    }
}

/// Registers `rewrite` in `ctx` both ways: as a function rewrite (`create_physical_expr`, and
/// the start of the analyzer) and as an [`AfterCoercion`] analyzer rule.
pub(crate) fn register_rewrite(
    ctx: &SessionContext,
    rewrite: Arc<dyn FunctionRewrite + Send + Sync>,
) -> DfResult<()> {
    ctx.state_ref()
        .write()
        .register_function_rewrite(rewrite.clone())?;
    ctx.add_analyzer_rule(Arc::new(AfterCoercion {
        name: rewrite.name().to_string(),
        rewrites: ApplyFunctionRewrites::new(vec![rewrite]),
    }));
    Ok(())
}

/// Makes integer and float arithmetic in `ctx` fail as PostgreSQL's does: in planned
/// statements (analyzer) and in every expression made with
/// `SessionState::create_physical_expr`.
pub fn register(ctx: &SessionContext) -> DfResult<()> {
    register_rewrite(ctx, Arc::new(CheckedIntegerArithmetic))
}

/// `expr` type-coerced against `schema`, then [`CheckedIntegerArithmetic`] over all of it: for
/// code that simplifies (folds constants) before it makes a physical expression, where the
/// rewrite in `create_physical_expr` would come too late.
pub fn check(expr: Expr, schema: &DFSchema) -> DfResult<Expr> {
    let ctx = SimplifyContext::builder()
        .with_schema(Arc::new(schema.clone()))
        .build();
    let coerced = ExprSimplifier::new(ctx).coerce(expr, schema)?;
    Ok(coerced
        .transform_up(|e| Ok(CheckedIntegerArithmetic.rewrite_one(e, schema)))?
        .data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int32Array;
    use datafusion::logical_expr::expr::ScalarFunction;

    fn run(op: Op, ty: IntType, args: Vec<ColumnarValue>, rows: usize) -> DfResult<ColumnarValue> {
        let Some(f) = FUNCTIONS.get(&(op, NumType::Int(ty))) else {
            panic!("no function for {op:?} {ty:?}");
        };
        let arg_fields = args
            .iter()
            .map(|a| Arc::new(Field::new("a", a.data_type(), true)))
            .collect();
        f.invoke_with_args(ScalarFunctionArgs {
            args,
            arg_fields,
            number_rows: rows,
            return_field: Arc::new(Field::new("r", ty.data_type(), true)),
            config_options: Arc::new(ConfigOptions::default()),
        })
    }

    fn ints(v: Vec<Option<i32>>) -> ColumnarValue {
        ColumnarValue::Array(Arc::new(Int32Array::from(v)))
    }

    fn message(r: DfResult<ColumnarValue>) -> String {
        match r {
            Ok(v) => panic!("expected an error, got {v:?}"),
            Err(DataFusionError::External(e)) => e.to_string(),
            Err(e) => panic!("unexpected error {e}"),
        }
    }

    #[test]
    fn overflow_fails_with_the_type_name() {
        let max = ints(vec![Some(1), Some(i32::MAX)]);
        let one = ColumnarValue::Scalar(ScalarValue::Int32(Some(1)));
        assert_eq!(
            message(run(
                Op::Add,
                IntType::Int4,
                vec![max.clone(), one.clone()],
                2
            )),
            "integer out of range"
        );
        assert_eq!(
            message(run(Op::Mul, IntType::Int4, vec![max.clone(), max], 2)),
            "integer out of range"
        );
        let min = ColumnarValue::Scalar(ScalarValue::Int64(Some(i64::MIN)));
        assert_eq!(
            message(run(Op::Neg, IntType::Int8, vec![min.clone()], 1)),
            "bigint out of range"
        );
        let minus_one = ColumnarValue::Scalar(ScalarValue::Int64(Some(-1)));
        assert_eq!(
            message(run(Op::Div, IntType::Int8, vec![min, minus_one], 1)),
            "bigint out of range"
        );
        let s = ColumnarValue::Scalar(ScalarValue::Int16(Some(i16::MIN)));
        let one = ColumnarValue::Scalar(ScalarValue::Int16(Some(1)));
        assert_eq!(
            message(run(Op::Sub, IntType::Int2, vec![s, one], 1)),
            "smallint out of range"
        );
    }

    #[test]
    fn values_under_nulls_do_not_count() {
        // The slot under the NULL holds i32::MAX; adding to it wraps, but it is no row.
        let a = Int32Array::new(
            vec![1, i32::MAX].into(),
            Some(NullBuffer::from(vec![true, false])),
        );
        let one = ColumnarValue::Scalar(ScalarValue::Int32(Some(1)));
        let out = run(
            Op::Add,
            IntType::Int4,
            vec![ColumnarValue::Array(Arc::new(a)), one],
            2,
        )
        .and_then(|v| v.into_array(2));
        let out = match out {
            Ok(a) => a,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(
            out.as_primitive::<Int32Type>().iter().collect::<Vec<_>>(),
            vec![Some(2), None]
        );
    }

    #[test]
    fn keeps_the_operator_name() {
        use datafusion::prelude::col;
        let schema = match DFSchema::try_from(datafusion::arrow::datatypes::Schema::new(vec![
            Field::new("a", DataType::Int32, true),
            Field::new("b", DataType::Int32, false),
        ])) {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        };
        let e = -(col("a") + col("b") * col("b"));
        let before = e.schema_name().to_string();
        let after = match check(e, &schema) {
            Ok(e) => e,
            Err(e) => panic!("{e}"),
        };
        assert!(matches!(after, Expr::ScalarFunction(ScalarFunction { .. })));
        assert_eq!(after.schema_name().to_string(), before);
    }
}
