//! Functions whose results could outgrow the memory limit, bounded.
//!
//! The session's memory pool ([`crate::MEMORY_LIMIT`]) sees what operators hold (sorts, aggregations,
//! joins), never what a scalar function makes: `repeat('a', 1500000000)` took 5.9 GB. Most functions make at
//! most a small multiple of their input (`upper`, `substr`, `md5`, `split_part`...), and their input was
//! read or made under these bounds. The others are bounded here, by one rule: **one call of a function (one
//! batch of rows) makes at most [`MAX_RESULT_BYTES`]**, refused with an error naming the function and the
//! limit before it allocates anything:
//!
//! - Sized by an argument: `repeat` (text × count), `lpad`/`rpad` (the length, up to 4 bytes a
//!   character), `replace` (each match of `from` becomes `to`), `regexp_replace` (every position may
//!   match), estimated from the arguments row by row.
//! - A call on constants only makes a constant, which projections copy into every row of a batch: it
//!   counts 8,192 times (`SELECT repeat('a', 60000000) FROM t` would otherwise pass as 60 MB and become
//!   491 GB, an allocation failure that aborts the process).
//! - Sized by the sum of their inputs, which the same column given many times multiplies: `concat`,
//!   `concat_ws`, `array_to_string` (the separator once per element), `make_array`, `array_concat`,
//!   `array_append`, `array_prepend`, the `array_replace` family (the replacement once per element):
//!   estimated row by row as the bytes of all arguments, plus those that are not lists once per element of
//!   the longest list among them.
//! - Every result of these is measured after the call too (an estimate could be low).
//! - Calls DataFusion's own planners build from the built-ins (`||` and `[..]` on lists) are rewritten to
//!   the bounded functions by an analyzer rule.
//! - `||` on strings is planned as the kernel it always was inside `kt_cap`, which measures the result: a
//!   chain of `||` grows by one operand per step, so no step makes more than its operands, each bounded.
//! - The list makers whose length is only an argument (`range` and `generate_series` as scalar functions,
//!   `array_repeat`, `array_resize`) are not registered: nothing of kubetrail uses them, and the table
//!   functions `range` and `generate_series` (`FROM generate_series(1, n)`) stream batches and stay.
//!
//! A query may call several functions per batch on each of its partitions, so what functions hold at once is
//! bounded by the calls in a query (bounded by `limits::MAX_SQL_TOKENS`) times this limit, not by it: the
//! limit stops the one call that would take the process, not every large query.

use std::sync::Arc;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, FieldRef};
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::planner::{ExprPlanner, PlannerResult, RawBinaryExpr};
use datafusion::logical_expr::sort_properties::{ExprProperties, SortProperties};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, Expr, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature, Volatility,
};
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::BinaryOperator;

/// The most bytes one call of a bounded function (one batch of rows) may make.
pub const MAX_RESULT_BYTES: usize = 64 << 20;
/// The rows a constant is copied into (DataFusion's batch size): a bounded function called on constants only
/// makes that many copies of its result once projected.
const BROADCAST_ROWS: u128 = 8192;

/// How a bounded function's result is estimated before it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Estimate {
    Repeat,
    Replace,
    RegexpReplace,
    /// The bytes of all arguments times (1 + the longest list among them).
    Inputs,
    /// `lpad`/`rpad`: the target length in characters, each up to 4 bytes, plus the text.
    Pad,
}

const BOUNDED: [(&str, Estimate); 15] = [
    ("repeat", Estimate::Repeat),
    ("lpad", Estimate::Pad),
    ("rpad", Estimate::Pad),
    ("replace", Estimate::Replace),
    ("regexp_replace", Estimate::RegexpReplace),
    ("concat", Estimate::Inputs),
    ("concat_ws", Estimate::Inputs),
    ("array_to_string", Estimate::Inputs),
    ("make_array", Estimate::Inputs),
    ("array_concat", Estimate::Inputs),
    ("array_append", Estimate::Inputs),
    ("array_prepend", Estimate::Inputs),
    ("array_replace", Estimate::Inputs),
    ("array_replace_n", Estimate::Inputs),
    ("array_replace_all", Estimate::Inputs),
];

const REMOVED: [&str; 4] = ["range", "generate_series", "array_repeat", "array_resize"];

/// Replaces the session's functions listed in the module documentation with bounded ones, removes the list
/// makers, and plans `||` on strings inside `kt_cap`.
pub fn install(ctx: &SessionContext) -> Result<()> {
    let mut bounded = std::collections::HashMap::new();
    for (name, estimate) in BOUNDED {
        if let Some(inner) = ctx.state().scalar_functions().get(name).cloned() {
            let udf = Arc::new(ScalarUDF::new_from_impl(Bounded { inner, estimate }));
            ctx.register_udf(udf.as_ref().clone());
            bounded.insert(name.to_string(), udf);
        }
    }
    ctx.add_analyzer_rule(Arc::new(UseBounded(bounded)));
    ctx.register_udf(ScalarUDF::new_from_impl(Bounded {
        inner: Arc::new(ScalarUDF::new_from_impl(Cap::default())),
        estimate: Estimate::Inputs,
    }));
    for name in REMOVED {
        ctx.deregister_udf(name);
    }
    use datafusion::execution::FunctionRegistry as _;
    ctx.state_ref()
        .write()
        .register_expr_planner(Arc::new(CapConcat))?;
    Ok(())
}

/// Replaces every call of a bounded function's built-in with the session's bounded one: DataFusion's own
/// planners build some calls from their built-ins rather than from the session's functions (`||` and `[..]`
/// on lists become `array_concat`, `make_array`...), which would otherwise go unbounded (doubling a list
/// ten times in 420 bytes of SQL took 6 GB).
#[derive(Debug)]
struct UseBounded(std::collections::HashMap<String, Arc<ScalarUDF>>);

impl datafusion::optimizer::AnalyzerRule for UseBounded {
    fn analyze(
        &self,
        plan: datafusion::logical_expr::LogicalPlan,
        _: &datafusion::config::ConfigOptions,
    ) -> Result<datafusion::logical_expr::LogicalPlan> {
        use datafusion::common::tree_node::{Transformed, TreeNode as _};
        plan.transform_up_with_subqueries(|node| {
            node.map_expressions(|e| {
                e.transform_up(|e| match e {
                    Expr::ScalarFunction(f)
                        if f.func.inner().downcast_ref::<Bounded>().is_none() =>
                    {
                        match self.0.get(f.func.name()) {
                            Some(b) => Ok(Transformed::yes(Expr::ScalarFunction(
                                ScalarFunction::new_udf(Arc::clone(b), f.args),
                            ))),
                            None => Ok(Transformed::no(Expr::ScalarFunction(f))),
                        }
                    }
                    e => Ok(Transformed::no(e)),
                })
            })
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "kt_use_bounded"
    }
}

fn too_large(name: &str, bytes: u128) -> DataFusionError {
    let what = if name == "kt_cap" {
        "`||`".to_string()
    } else {
        format!("{name}()")
    };
    DataFusionError::ResourcesExhausted(format!(
        "{what} would make {bytes} bytes for one batch of rows; at most {MAX_RESULT_BYTES} \
         (a function's result is bounded: narrow the rows or the values)"
    ))
}

/// The bytes of row `i` of a string or binary argument (0 when null or of another type).
fn bytes_at(arg: &ColumnarValue, i: usize) -> u128 {
    match arg {
        ColumnarValue::Scalar(s) => scalar_bytes(s),
        ColumnarValue::Array(a) if a.is_null(i) => 0,
        ColumnarValue::Array(a) => match a.data_type() {
            DataType::Utf8 => a.as_string::<i32>().value(i).len() as u128,
            DataType::LargeUtf8 => a.as_string::<i64>().value(i).len() as u128,
            DataType::Utf8View => a.as_string_view().value(i).len() as u128,
            DataType::Binary => a.as_binary::<i32>().value(i).len() as u128,
            DataType::LargeBinary => a.as_binary::<i64>().value(i).len() as u128,
            DataType::BinaryView => a.as_binary_view().value(i).len() as u128,
            _ => 0,
        },
    }
}

fn scalar_bytes(s: &ScalarValue) -> u128 {
    match s {
        ScalarValue::Utf8(Some(v))
        | ScalarValue::LargeUtf8(Some(v))
        | ScalarValue::Utf8View(Some(v)) => v.len() as u128,
        ScalarValue::Binary(Some(v))
        | ScalarValue::LargeBinary(Some(v))
        | ScalarValue::BinaryView(Some(v)) => v.len() as u128,
        other => other.size() as u128,
    }
}

/// Row `i` of an integer argument (0 when null or not an integer).
fn int_at(arg: &ColumnarValue, i: usize) -> i128 {
    let value = match arg {
        ColumnarValue::Scalar(s) => s.clone(),
        ColumnarValue::Array(a) => match ScalarValue::try_from_array(a, i) {
            Ok(v) => v,
            Err(_) => return 0,
        },
    };
    match value.cast_to(&DataType::Int64) {
        Ok(ScalarValue::Int64(Some(n))) => i128::from(n),
        _ => 0,
    }
}

/// Each row's bytes of an argument, and its list's length (0 when not a list). A list row's bytes are its
/// share of the whole list's, by length.
fn rows_of(arg: &ColumnarValue, rows: usize) -> Vec<(u128, u128)> {
    let list_lens = |a: &dyn Array| -> Option<Vec<u128>> {
        let lens: Vec<u128> = match a.data_type() {
            DataType::List(_) => a
                .as_list::<i32>()
                .offsets()
                .windows(2)
                .map(|w| (w[1] - w[0]) as u128)
                .collect(),
            DataType::LargeList(_) => a
                .as_list::<i64>()
                .offsets()
                .windows(2)
                .map(|w| (w[1] - w[0]) as u128)
                .collect(),
            _ => return None,
        };
        Some(lens)
    };
    match arg {
        ColumnarValue::Scalar(s) => {
            let len = match s {
                ScalarValue::List(l) => list_lens(l.as_ref()).and_then(|v| v.first().copied()),
                ScalarValue::LargeList(l) => list_lens(l.as_ref()).and_then(|v| v.first().copied()),
                _ => None,
            };
            vec![(scalar_bytes(s), len.unwrap_or(0)); rows]
        }
        ColumnarValue::Array(a) => match list_lens(a.as_ref()) {
            Some(lens) => {
                let total: u128 = lens.iter().sum::<u128>().max(1);
                let memory = a.get_array_memory_size() as u128;
                lens.iter().map(|&n| (memory * n / total + 8, n)).collect()
            }
            None if matches!(
                a.data_type(),
                DataType::Utf8
                    | DataType::LargeUtf8
                    | DataType::Utf8View
                    | DataType::Binary
                    | DataType::LargeBinary
                    | DataType::BinaryView
            ) =>
            {
                (0..a.len()).map(|i| (bytes_at(arg, i), 0)).collect()
            }
            None => {
                let each = (a.get_array_memory_size() / a.len().max(1)) as u128;
                vec![(each, 0); a.len()]
            }
        },
    }
}

/// What one call would make, at most (an estimate: see the module documentation).
fn estimate(how: Estimate, args: &ScalarFunctionArgs) -> u128 {
    let rows = args.number_rows;
    let a = &args.args;
    let arg = |k: usize| a.get(k);
    match how {
        Estimate::Repeat => match (arg(0), arg(1)) {
            (Some(s), Some(n)) => (0..rows)
                .map(|i| bytes_at(s, i) * int_at(n, i).max(0) as u128)
                .sum(),
            _ => 0,
        },
        Estimate::Replace => match (arg(0), arg(1), arg(2)) {
            (Some(s), Some(from), Some(to)) => (0..rows)
                .map(|i| {
                    let (s, from, to) = (bytes_at(s, i), bytes_at(from, i), bytes_at(to, i));
                    if from == 0 {
                        (s + 1) * (to + 1)
                    } else {
                        s * to.div_ceil(from).max(1) + to
                    }
                })
                .sum(),
            _ => 0,
        },
        Estimate::Pad => match (arg(0), arg(1)) {
            (Some(s), Some(n)) => (0..rows)
                .map(|i| bytes_at(s, i) + int_at(n, i).max(0) as u128 * 4)
                .sum(),
            _ => 0,
        },
        Estimate::RegexpReplace => match (arg(0), arg(2)) {
            (Some(s), Some(replacement)) => (0..rows)
                .map(|i| (bytes_at(s, i) + 1) * (bytes_at(replacement, i) + 1))
                .sum(),
            _ => 0,
        },
        // Per row: every argument's bytes, and the other arguments' once more per element of the longest
        // list (a separator or a replacement can be written once per element).
        Estimate::Inputs => {
            let per_arg: Vec<Vec<(u128, u128)>> = a.iter().map(|x| rows_of(x, rows)).collect();
            (0..rows)
                .map(|i| {
                    let row = per_arg.iter().filter_map(|v| v.get(i));
                    let bytes: u128 = row.clone().map(|(b, _)| b).sum();
                    let scalars: u128 = row.clone().filter(|(_, n)| *n == 0).map(|(b, _)| b).sum();
                    let longest = row.map(|(_, n)| *n).max().unwrap_or(0);
                    bytes + scalars * longest
                })
                .sum()
        }
    }
}

/// The bytes a result holds.
fn result_bytes(v: &ColumnarValue) -> u128 {
    match v {
        ColumnarValue::Array(a) => a.get_array_memory_size() as u128,
        ColumnarValue::Scalar(s) => s.size() as u128,
    }
}

/// A function with its result bounded: everything but the call is the function's own (its simplification
/// excepted, which may rebuild the call with the unbounded function).
#[derive(Debug, PartialEq, Eq, Hash)]
struct Bounded {
    inner: Arc<ScalarUDF>,
    estimate: Estimate,
}

impl ScalarUDFImpl for Bounded {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn schema_name(&self, args: &[Expr]) -> Result<String> {
        self.inner.inner().schema_name(args)
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        self.inner.return_field_from_args(args)
    }

    fn is_strict(&self) -> bool {
        self.inner.inner().is_strict()
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let name = self.inner.name();
        // A result of constants only is a constant that projections and joins copy into every row of a
        // batch (constant folding calls with one row): it counts as many times as a batch has rows.
        let copies = if args
            .args
            .iter()
            .all(|a| matches!(a, ColumnarValue::Scalar(_)))
        {
            BROADCAST_ROWS
        } else {
            1
        };
        let estimate = estimate(self.estimate, &args).saturating_mul(copies);
        if estimate > MAX_RESULT_BYTES as u128 {
            return Err(too_large(name, estimate));
        }
        let result = self.inner.invoke_with_args(args)?;
        let made = result_bytes(&result).saturating_mul(copies);
        if made > MAX_RESULT_BYTES as u128 {
            return Err(too_large(name, made));
        }
        Ok(result)
    }

    fn short_circuits(&self) -> bool {
        self.inner.short_circuits()
    }

    fn output_ordering(&self, inputs: &[ExprProperties]) -> Result<SortProperties> {
        self.inner.output_ordering(inputs)
    }

    fn preserves_lex_ordering(&self, inputs: &[ExprProperties]) -> Result<bool> {
        self.inner.preserves_lex_ordering(inputs)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }
}

/// `kt_cap(x)`: `x` itself; [`Bounded`] measures it.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Cap {
    signature: Signature,
}

impl Default for Cap {
    fn default() -> Cap {
        Cap {
            signature: Signature::any(1, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for Cap {
    fn name(&self) -> &str {
        "kt_cap"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        Ok(arg_types.first().cloned().unwrap_or(DataType::Null))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        args.args
            .into_iter()
            .next()
            .ok_or_else(|| DataFusionError::Plan("kt_cap(x) takes one argument".into()))
    }
}

/// Plans `a || b` on strings as `kt_cap(a || b)` (lists are the array planner's, which runs first).
#[derive(Debug)]
struct CapConcat;

impl ExprPlanner for CapConcat {
    fn plan_binary_op(
        &self,
        expr: RawBinaryExpr,
        _schema: &datafusion::common::DFSchema,
    ) -> Result<PlannerResult<RawBinaryExpr>> {
        if expr.op != BinaryOperator::StringConcat {
            return Ok(PlannerResult::Original(expr));
        }
        let concat = Expr::BinaryExpr(datafusion::logical_expr::BinaryExpr::new(
            Box::new(expr.left),
            datafusion::logical_expr::Operator::StringConcat,
            Box::new(expr.right),
        ));
        let cap = ScalarUDF::new_from_impl(Bounded {
            inner: Arc::new(ScalarUDF::new_from_impl(Cap::default())),
            estimate: Estimate::Inputs,
        });
        Ok(PlannerResult::Planned(Expr::ScalarFunction(
            ScalarFunction::new_udf(Arc::new(cap), vec![concat]),
        )))
    }
}
