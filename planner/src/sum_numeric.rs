//! `sum`, as PostgreSQL types it: `sum(bigint)` is `numeric`.
//!
//! DataFusion sums an Int64 into an Int64, which overflows once the total passes 2^63;
//! PostgreSQL sums `bigint` into `numeric`, which does not, and says so in the result's type.
//! braid's `sum` is DataFusion's, with one change in how arguments are coerced: a `bigint`
//! argument becomes `numeric(38, 0)` (Decimal128, added in 128 bits; its sum's type is
//! `numeric(38, 0)` again). `smallint` and `integer` still widen to `bigint` (PostgreSQL's
//! `sum(integer)` is `bigint` too), floats to `double precision`, `numeric` and intervals stay
//! as they are. Everything else (accumulators, grouped accumulators, sliding windows,
//! statistics) is DataFusion's `Sum` on the coerced type.
//!
//! It replaces the built-in `sum` by name in every session, so the type is right from the
//! first plan on (the row description sent before any row).

use std::sync::LazyLock;

use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{plan_err, Result as DfResult, ScalarValue};
use datafusion::functions_aggregate::sum::Sum;
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::AggregateOrderSensitivity;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, Documentation, GroupsAccumulator, ReversedUDAF,
    SetMonotonicity, Signature, StatisticsArgs, Volatility,
};
use datafusion::prelude::SessionContext;

/// The type a `bigint` is summed in: the widest Decimal128 with no fraction digits.
const BIGINT_SUM: DataType = DataType::Decimal128(38, 0);

#[derive(Debug, PartialEq, Eq, Hash)]
struct PgSum {
    inner: Sum,
    signature: Signature,
}

static PG_SUM: LazyLock<AggregateUDF> = LazyLock::new(|| {
    AggregateUDF::new_from_impl(PgSum {
        inner: Sum::new(),
        signature: Signature::user_defined(Volatility::Immutable),
    })
});

impl AggregateUDFImpl for PgSum {
    fn name(&self) -> &str {
        "sum"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> DfResult<Vec<DataType>> {
        let [t] = arg_types else {
            return plan_err!("sum takes one argument, got {}", arg_types.len());
        };
        let to = match t {
            DataType::Int64 => BIGINT_SUM,
            DataType::Null | DataType::Int8 | DataType::Int16 | DataType::Int32 => DataType::Int64,
            DataType::UInt8 | DataType::UInt16 | DataType::UInt32 | DataType::UInt64 => {
                DataType::UInt64
            }
            DataType::Float16 | DataType::Float32 | DataType::Float64 => DataType::Float64,
            DataType::Decimal32(..)
            | DataType::Decimal64(..)
            | DataType::Decimal128(..)
            | DataType::Decimal256(..)
            | DataType::Duration(_)
            | DataType::Interval(_) => t.clone(),
            DataType::Dictionary(_, value) => return self.coerce_types(&[value.as_ref().clone()]),
            other => {
                let name = crate::functions::pg_type_name(&Field::new("", other.clone(), true));
                return plan_err!("function sum({name}) does not exist");
            }
        };
        Ok(vec![to])
    }

    fn return_type(&self, arg_types: &[DataType]) -> DfResult<DataType> {
        self.inner.return_type(arg_types)
    }

    fn accumulator(&self, args: AccumulatorArgs) -> DfResult<Box<dyn Accumulator>> {
        self.inner.accumulator(args)
    }

    fn state_fields(&self, args: StateFieldsArgs) -> DfResult<Vec<FieldRef>> {
        self.inner.state_fields(args)
    }

    fn groups_accumulator_supported(&self, args: AccumulatorArgs) -> bool {
        self.inner.groups_accumulator_supported(args)
    }

    fn create_groups_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> DfResult<Box<dyn GroupsAccumulator>> {
        self.inner.create_groups_accumulator(args)
    }

    fn create_sliding_accumulator(&self, args: AccumulatorArgs) -> DfResult<Box<dyn Accumulator>> {
        self.inner.create_sliding_accumulator(args)
    }

    fn reverse_expr(&self) -> ReversedUDAF {
        ReversedUDAF::Identical
    }

    fn order_sensitivity(&self) -> AggregateOrderSensitivity {
        self.inner.order_sensitivity()
    }

    fn value_from_stats(&self, args: &StatisticsArgs) -> Option<ScalarValue> {
        self.inner.value_from_stats(args)
    }

    fn set_monotonicity(&self, data_type: &DataType) -> SetMonotonicity {
        self.inner.set_monotonicity(data_type)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }
}

/// Makes `sum` in `ctx` PostgreSQL's (see the module docs).
pub fn register(ctx: &SessionContext) {
    ctx.register_udaf(PG_SUM.clone());
}
