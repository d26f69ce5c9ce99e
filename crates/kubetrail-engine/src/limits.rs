//! Bounds on what the engine plans, and the stack a thread planning it needs.
//!
//! DataFusion plans and runs expressions by recursion, one set of stack frames per level of nesting, and a
//! deep enough expression overflows the thread's stack and aborts the process. Its `recursive_protection`
//! feature is on: it grows the stack through `stacker` at the functions it annotates, but not in derived
//! `Drop`, `Clone` or `Hash`, so it bounds nothing by itself. Nesting comes from two places:
//!
//! - Parentheses, function calls, subqueries and `CASE`: the SQL parser's recursion limit (50) refuses them.
//! - Runs the parser builds iteratively into left-deep trees: `1+1+1...`, `x IS NULL IS NULL...`,
//!   `x::int::int...`, `UNION ALL` and join chains, and the conjunctions DataFusion itself rebuilds as chains
//!   (a filter's `AND`s, however they were parenthesized, are split and joined again one term per level).
//!   Each level takes at least two tokens, so SQL of at most [`MAX_SQL_TOKENS`] tokens is at most about a
//!   thousand levels deep; a `where` expression is balanced (`kubetrail-query` writes long runs of `or` as
//!   trees about log2(n) deep) but its `and`s come back as a chain, one level per term, so it has at most
//!   [`MAX_WHERE_TERMS`] terms.
//!
//! A thread that plans queries has a stack of [`QUERY_STACK_BYTES`]: twice what the deepest of those shapes
//! took in a debug build (the test `the_largest_accepted_queries_fit_half_the_query_stack` runs them on half
//! of it; a release build takes less). It is address space: pages are used only as deep as a query goes.
//!
//! Planning itself is synchronous: a plan that takes long (a join of hundreds of tables) holds its thread
//! until it is made, whatever the time limit; the token limit bounds it too.
//!
//! # Time
//!
//! A time limit (a tokio timeout around the query) can only act when the query's task yields. DataFusion
//! yields at its sources and exchanges ([`EnsureCooperative`]); an operator that makes many batches from few
//! (a cross join, `generate_series` under a join) can go on for minutes inside one poll: a 100,000 ×
//! 100,000 cross join under `max` answered its 2 s limit after 84 s. [`YieldEveryBatch`] wraps every
//! operator in DataFusion's `CooperativeExec`, so every batch any operator makes spends tokio's
//! cooperative budget and the task yields every few batches; one poll is then one batch of work.
//!
//! [`EnsureCooperative`]: datafusion::physical_optimizer::ensure_coop::EnsureCooperative

/// The most bytes of SQL a query may have.
pub const MAX_SQL_BYTES: usize = 64 << 10;

/// The most bytes of a `where` expression (its terms are what bound the plan; this bounds parsing it).
pub const MAX_WHERE_BYTES: usize = 256 << 10;

/// The most tokens (words, numbers, strings, operators and punctuation; not whitespace or comments) SQL may
/// have.
pub const MAX_SQL_TOKENS: usize = 2048;

/// The most terms (compared values, `kubetrail_query::Expr::terms`) a `where` expression may have.
pub const MAX_WHERE_TERMS: usize = 1000;

/// The most bytes of values a collected answer (`Engine::sql_rows`) may hold: each function's result is
/// bounded (`capped`), but a query can make many small batches.
pub const MAX_ANSWER_BYTES: usize = 64 << 20;

/// The stack of a thread that plans and runs queries.
pub const QUERY_STACK_BYTES: usize = 256 << 20;

/// A physical optimizer rule, last: every operator's output is wrapped in a `CooperativeExec` (see the
/// module documentation).
#[derive(Debug, Default)]
pub struct YieldEveryBatch;

impl datafusion::physical_optimizer::PhysicalOptimizerRule for YieldEveryBatch {
    fn optimize(
        &self,
        plan: std::sync::Arc<dyn datafusion::physical_plan::ExecutionPlan>,
        _config: &datafusion::config::ConfigOptions,
    ) -> datafusion::common::Result<std::sync::Arc<dyn datafusion::physical_plan::ExecutionPlan>>
    {
        use datafusion::common::tree_node::{Transformed, TreeNode};
        use datafusion::physical_plan::coop::CooperativeExec;
        plan.transform_up(|plan| {
            if plan.is::<CooperativeExec>() {
                return Ok(Transformed::no(plan));
            }
            Ok(Transformed::yes(
                std::sync::Arc::new(CooperativeExec::new(plan))
                    as std::sync::Arc<dyn datafusion::physical_plan::ExecutionPlan>,
            ))
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "kubetrail_yield_every_batch"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// Refuses SQL over [`MAX_SQL_BYTES`] or [`MAX_SQL_TOKENS`], saying which and by how much (`is 70000 bytes;
/// at most 65536`). SQL that does not tokenize passes: planning it reports the syntax error with its place.
pub fn check_sql(sql: &str) -> Result<(), String> {
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
    if sql.len() > MAX_SQL_BYTES {
        return Err(format!("is {} bytes; at most {MAX_SQL_BYTES}", sql.len()));
    }
    let Ok(tokens) = Tokenizer::new(&GenericDialect {}, sql).tokenize() else {
        return Ok(());
    };
    let n = tokens
        .iter()
        .filter(|t| !matches!(t, Token::Whitespace(_) | Token::EOF))
        .count();
    if n > MAX_SQL_TOKENS {
        return Err(format!("has {n} tokens; at most {MAX_SQL_TOKENS}"));
    }
    Ok(())
}

/// Refuses a `where` expression over [`MAX_WHERE_BYTES`] (before it is parsed) or, parsed, over
/// [`MAX_WHERE_TERMS`].
pub fn check_where_bytes(expr: &str) -> Result<(), String> {
    if expr.len() > MAX_WHERE_BYTES {
        return Err(format!(
            "is {} bytes; at most {MAX_WHERE_BYTES}",
            expr.len()
        ));
    }
    Ok(())
}

/// See [`check_where_bytes`].
pub fn check_where_terms(expr: &kubetrail_query::Expr) -> Result<(), String> {
    let n = expr.terms();
    if n > MAX_WHERE_TERMS {
        return Err(format!("has {n} terms; at most {MAX_WHERE_TERMS}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sql_is_measured_in_bytes_and_tokens() {
        assert_eq!(check_sql("SELECT count(*) FROM events"), Ok(()));
        let long = format!("SELECT '{}'", "x".repeat(MAX_SQL_BYTES));
        assert_eq!(
            check_sql(&long),
            Err(format!("is {} bytes; at most 65536", MAX_SQL_BYTES + 9))
        );
        // `SELECT`, 1023 times `1 +`, `1`: 2048 tokens; whitespace and comments are not tokens.
        let at = format!("SELECT {}1 -- a comment", "1 + ".repeat(1023));
        assert_eq!(check_sql(&at), Ok(()));
        let over = format!("SELECT {}1", "1+".repeat(1024));
        assert_eq!(
            check_sql(&over),
            Err("has 2050 tokens; at most 2048".into())
        );
        // Not SQL at all: the planner says where.
        assert_eq!(check_sql("SELECT 'unterminated"), Ok(()));
    }

    #[test]
    fn where_is_measured_in_bytes_and_terms() {
        let run = |n: usize| vec!["user = a"; n].join(" or ");
        let at = kubetrail_query::parse(&run(MAX_WHERE_TERMS)).unwrap();
        assert_eq!(check_where_terms(&at), Ok(()));
        let over = kubetrail_query::parse(&run(MAX_WHERE_TERMS + 1)).unwrap();
        assert_eq!(
            check_where_terms(&over),
            Err("has 1001 terms; at most 1000".into())
        );
        assert_eq!(check_where_bytes(&run(10)), Ok(()));
        assert!(check_where_bytes(&"x".repeat(MAX_WHERE_BYTES + 1)).is_err());
    }
}
