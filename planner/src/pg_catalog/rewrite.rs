//! Rewrites of the PostgreSQL spellings in catalog queries (psql's `\d` family, schema
//! browsers) that DataFusion cannot plan, into ones it can, with the same result:
//!
//! - `a OPERATOR(pg_catalog.~) b` is `a ~ b`; `x COLLATE pg_catalog.default` (or `"C"`,
//!   `"POSIX"`) is `x`: braid compares text byte by byte, as those collations do.
//! - Casts to `regclass`, `regtype` and `regnamespace` become the functions of
//!   [`super::functions`] (`'t'::regclass` is the OID, `oid::regclass` the name); other
//!   `pg_catalog.`-qualified types lose the qualifier (`pg_catalog.text`, `pg_catalog.int2[]`).
//! - A scalar subquery over catalog tables that is not aggregated, such as psql's
//!   `(SELECT pg_get_expr(d.adbin, ...) FROM pg_attrdef d WHERE d.adrelid = a.attrelid ...)`,
//!   takes `max()` of its one column: DataFusion decorrelates only aggregated subqueries, and
//!   over the at most one row such a lookup finds, `max` is that row's value (NULL for none).
//! - `array(SELECT ... FROM unnest(x.reloptions) ...)` (psql's `\d+` adds the TOAST table's
//!   options this way) is the empty `text[]`: braid keeps no storage parameters, so every
//!   `reloptions` is NULL, it unnests to no rows, and PostgreSQL's `array()` of no rows is `{}`.
//! - `EXISTS (...)` in a select list (DataFusion plans it only in WHERE) is
//!   `(SELECT count(*) ...) > 0`.
//! - A SELECT that inner-joins a catalog table braid never fills ([`super::EMPTY_TABLES`]:
//!   policies, publications, inheritance, ...) returns no rows whatever it selects, so its
//!   select list becomes typed NULLs under the same names and its WHERE `false`; what psql
//!   selects there (`array(SELECT ...)`, lateral `generate_series`, `= any(array)`) need not
//!   be planned.
//!
//! What must stay true: every rewrite keeps the query's result; rewrites that depend on a
//! table being a catalog table look only at relations named in `pg_catalog`.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::helpers::attached_token::AttachedToken;
use datafusion::sql::sqlparser::ast::{
    BinaryOperator, CaseWhen, CastKind, DataType, Expr, Function, FunctionArg, FunctionArgExpr,
    FunctionArgumentList, FunctionArguments, GroupByExpr, Ident, JoinOperator, ObjectName, Query,
    Select, SelectItem, SetExpr, TableFactor, TableWithJoins, Value, Visit, VisitMut, Visitor,
    VisitorMut,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

use super::functions::{REGCLASS_NAME, REGCLASS_OID, REGNAMESPACE_NAME};
use super::{EMPTY_TABLES, PG_CATALOG};

/// Applies the rewrites to a query (after braid has named its output columns).
pub fn rewrite_catalog_query(query: &mut Query) {
    let _ = query.visit(&mut Rewriter);
}

struct Rewriter;

impl VisitorMut for Rewriter {
    type Break = ();

    fn post_visit_expr(&mut self, e: &mut Expr) -> ControlFlow<()> {
        match e {
            Expr::BinaryOp { op, .. } => {
                if let BinaryOperator::PGCustomBinaryOperator(parts) = op {
                    if let Some(plain) = plain_operator(parts) {
                        *op = plain;
                    }
                }
            }
            Expr::Collate { expr, collation } if is_bytewise(collation) => {
                let inner = std::mem::replace(expr.as_mut(), Expr::value(Value::Null));
                *e = inner;
            }
            Expr::Cast {
                kind: CastKind::DoubleColon | CastKind::Cast,
                expr,
                data_type,
                ..
            } => {
                let literal = matches!(
                    expr.as_ref(),
                    Expr::Value(v) if matches!(v.value, Value::SingleQuotedString(_))
                );
                let mut inner = || std::mem::replace(expr.as_mut(), Expr::value(Value::Null));
                match reg_type(data_type).as_deref() {
                    Some("regclass") => {
                        let f = if literal { REGCLASS_OID } else { REGCLASS_NAME };
                        *e = call(f, vec![inner()]);
                    }
                    Some("regtype") => {
                        *e = call("format_type", vec![inner(), Expr::value(Value::Null)]);
                    }
                    Some("regnamespace") => *e = call(REGNAMESPACE_NAME, vec![inner()]),
                    _ => {
                        unqualify_type(data_type);
                        // `'t'::regclass::text` is the name again.
                        let of_oid = matches!(
                            expr.as_ref(),
                            Expr::Function(f) if f.name.to_string() == REGCLASS_OID
                        );
                        if of_oid && matches!(data_type, DataType::Text | DataType::Varchar(_)) {
                            let oid = std::mem::replace(expr.as_mut(), Expr::value(Value::Null));
                            *e = call(REGCLASS_NAME, vec![oid]);
                        }
                    }
                }
            }
            Expr::Function(f) if is_array_of_reloptions(f) => {
                let empty = Parser::new(&PostgreSqlDialect {})
                    .try_with_sql("CAST(make_array() AS text[])")
                    .and_then(|mut p| p.parse_expr());
                if let Ok(empty) = empty {
                    *e = empty;
                }
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
        // The order of no rows: its ORDER BY may name columns the emptied select lists no
        // longer have.
        if returns_nothing(&query.body) {
            query.order_by = None;
        }
        ControlFlow::Continue(())
    }

    fn post_visit_select(&mut self, select: &mut Select) -> ControlFlow<()> {
        for item in &mut select.projection {
            if let SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } = item {
                let _ = e.visit(&mut ProjectionSubqueries::default());
            }
        }
        if joins_empty_catalog_table(select) && !aggregates(select) {
            empty_select(select);
        }
        ControlFlow::Continue(())
    }
}

/// Whether a collation compares text as braid always does, byte by byte: `default` (braid's
/// one collation is bytewise, like PostgreSQL's C locale), `C` or `POSIX`, optionally in
/// `pg_catalog`.
/// Any other collation is left for DataFusion to refuse rather than silently ignored.
/// Whether `f` is `array(SELECT ... FROM unnest(<...>.reloptions) [alias])`.
fn is_array_of_reloptions(f: &Function) -> bool {
    if name_parts(&f.name).last().map(String::as_str) != Some("array") {
        return false;
    }
    let FunctionArguments::Subquery(q) = &f.args else {
        return false;
    };
    let SetExpr::Select(select) = q.body.as_ref() else {
        return false;
    };
    let [from] = select.from.as_slice() else {
        return false;
    };
    if !from.joins.is_empty() {
        return false;
    }
    let of_reloptions = |e: &Expr| match e {
        Expr::Identifier(i) => i.value.eq_ignore_ascii_case("reloptions"),
        Expr::CompoundIdentifier(parts) => parts
            .last()
            .is_some_and(|i| i.value.eq_ignore_ascii_case("reloptions")),
        _ => false,
    };
    match &from.relation {
        TableFactor::Table {
            name,
            args: Some(args),
            ..
        } => {
            name_parts(name).last().map(String::as_str) == Some("unnest")
                && matches!(
                    args.args.as_slice(),
                    [FunctionArg::Unnamed(FunctionArgExpr::Expr(e))] if of_reloptions(e)
                )
        }
        TableFactor::UNNEST { array_exprs, .. } => {
            matches!(array_exprs.as_slice(), [e] if of_reloptions(e))
        }
        _ => false,
    }
}

fn is_bytewise(collation: &ObjectName) -> bool {
    let parts = name_parts(collation);
    match parts.as_slice() {
        [name] | [_, name] => {
            (parts.len() == 1 || parts[0] == PG_CATALOG)
                && ["default", "C", "POSIX"].contains(&name.as_str())
        }
        _ => false,
    }
}

/// `OPERATOR(pg_catalog.op)` as the plain operator.
fn plain_operator(parts: &[String]) -> Option<BinaryOperator> {
    let (op, schema) = parts.split_last()?;
    if !schema.iter().all(|s| s.eq_ignore_ascii_case(PG_CATALOG)) {
        return None;
    }
    Some(match op.as_str() {
        "~" => BinaryOperator::PGRegexMatch,
        "~*" => BinaryOperator::PGRegexIMatch,
        "!~" => BinaryOperator::PGRegexNotMatch,
        "!~*" => BinaryOperator::PGRegexNotIMatch,
        "~~" => BinaryOperator::PGLikeMatch,
        "!~~" => BinaryOperator::PGNotLikeMatch,
        "=" => BinaryOperator::Eq,
        "<>" | "!=" => BinaryOperator::NotEq,
        "<" => BinaryOperator::Lt,
        "<=" => BinaryOperator::LtEq,
        ">" => BinaryOperator::Gt,
        ">=" => BinaryOperator::GtEq,
        _ => return None,
    })
}

/// `regclass`, `regtype` or `regnamespace` when `t` names one (qualified or not).
fn reg_type(t: &DataType) -> Option<String> {
    let (name, mods) = match t {
        DataType::Regclass => return Some("regclass".into()),
        DataType::Custom(name, mods) => (name, mods),
        _ => return None,
    };
    let parts = name_parts(name);
    let (last, schema) = parts.split_last()?;
    let qualified_ok = schema.is_empty() || (schema.len() == 1 && schema[0] == PG_CATALOG);
    (qualified_ok
        && mods.is_empty()
        && ["regclass", "regtype", "regnamespace"].contains(&last.as_str()))
    .then(|| last.clone())
}

/// `pg_catalog.text` → `text`, also inside arrays (`pg_catalog.int2[]`).
fn unqualify_type(t: &mut DataType) {
    match t {
        DataType::Custom(name, mods) if mods.is_empty() => {
            let parts = name_parts(name);
            if let [schema, last] = parts.as_slice() {
                if schema == PG_CATALOG {
                    let parsed = Parser::new(&PostgreSqlDialect {})
                        .try_with_sql(last)
                        .and_then(|mut p| p.parse_data_type());
                    if let Ok(plain) = parsed {
                        *t = plain;
                    }
                }
            }
        }
        DataType::Array(elem) => {
            use datafusion::sql::sqlparser::ast::ArrayElemTypeDef as A;
            match elem {
                A::AngleBracket(inner) | A::SquareBracket(inner, _) | A::Parenthesis(inner) => {
                    unqualify_type(inner)
                }
                A::None => {}
            }
        }
        _ => {}
    }
}

fn name_parts(name: &ObjectName) -> Vec<String> {
    name.0
        .iter()
        .map(|p| match p.as_ident() {
            Some(i) => crate::sql::fold_ident(i),
            None => p.to_string(),
        })
        .collect()
}

/// A call of the function `name` (resolved by bare name, as braid registers its functions).
fn call(name: &str, args: Vec<Expr>) -> Expr {
    Expr::Function(Function {
        name: ObjectName::from(vec![Ident::new(name)]),
        uses_odbc_syntax: false,
        parameters: FunctionArguments::None,
        args: FunctionArguments::List(FunctionArgumentList {
            duplicate_treatment: None,
            args: args
                .into_iter()
                .map(|e| FunctionArg::Unnamed(FunctionArgExpr::Expr(e)))
                .collect(),
            clauses: vec![],
        }),
        filter: None,
        null_treatment: None,
        over: None,
        within_group: vec![],
    })
}

/// Rewrites the subqueries of one select-list expression (not those nested deeper: each
/// SELECT's own list is rewritten when the visitor leaves it).
#[derive(Default)]
struct ProjectionSubqueries {
    /// How many queries deep the visitor is.
    depth: usize,
}

impl VisitorMut for ProjectionSubqueries {
    type Break = ();

    fn pre_visit_query(&mut self, _: &mut Query) -> ControlFlow<()> {
        self.depth += 1;
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, _: &mut Query) -> ControlFlow<()> {
        self.depth -= 1;
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, e: &mut Expr) -> ControlFlow<()> {
        if self.depth > 0 {
            return ControlFlow::Continue(());
        }
        match e {
            Expr::Exists { subquery, negated } => {
                if let SetExpr::Select(s) = subquery.body.as_mut() {
                    if s.projection.len() == 1 && !aggregates(s) {
                        s.projection = vec![SelectItem::UnnamedExpr(count_star())];
                        let count = Expr::Subquery(subquery.clone());
                        *e = Expr::BinaryOp {
                            left: Box::new(count),
                            op: if *negated {
                                BinaryOperator::Eq
                            } else {
                                BinaryOperator::Gt
                            },
                            right: Box::new(Expr::value(Value::Number("0".into(), false))),
                        };
                    }
                }
            }
            Expr::Subquery(q) => {
                if let Some(outer_only) = wrap_catalog_lookup(q) {
                    let lookup = std::mem::replace(e, Expr::value(Value::Null));
                    *e = Expr::Case {
                        case_token: AttachedToken::empty(),
                        end_token: AttachedToken::empty(),
                        operand: None,
                        conditions: vec![CaseWhen {
                            condition: outer_only,
                            result: lookup,
                        }],
                        else_result: None,
                    };
                }
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }
}

fn count_star() -> Expr {
    Expr::Function(Function {
        name: ObjectName::from(vec![Ident::new("count")]),
        uses_odbc_syntax: false,
        parameters: FunctionArguments::None,
        args: FunctionArguments::List(FunctionArgumentList {
            duplicate_treatment: None,
            args: vec![FunctionArg::Unnamed(FunctionArgExpr::Wildcard)],
            clauses: vec![],
        }),
        filter: None,
        null_treatment: None,
        over: None,
        within_group: vec![],
    })
}

/// `(SELECT x FROM pg_catalog.t ... )` → `(SELECT max(x) FROM ...)` for a one-column,
/// unaggregated lookup in catalog tables only, made decorrelatable: a condition on the outer
/// row alone (psql's `AND a.atthasdef`) leaves the subquery and is returned, to guard it as
/// `CASE WHEN cond THEN (subquery) END`; an outer column the subquery equates with one of its
/// own (`c.oid = a.attcollation`) is replaced by that column in its other conditions
/// (`a.attcollation <> t.typcollation` → `c.oid <> t.typcollation`), as DataFusion joins on
/// equalities only.
fn wrap_catalog_lookup(q: &mut Query) -> Option<Expr> {
    if q.limit_clause.is_some() || q.fetch.is_some() {
        return None;
    }
    let SetExpr::Select(s) = q.body.as_mut() else {
        return None;
    };
    if s.projection.len() != 1 || aggregates(s) || s.distinct.is_some() {
        return None;
    }
    let catalog_only = !s.from.is_empty()
        && s.from
            .iter()
            .all(|twj| factors(twj).all(|(f, _)| catalog_table(f).is_some()));
    if !catalog_only {
        return None;
    }
    let inner: Vec<String> = s
        .from
        .iter()
        .flat_map(|twj| factors(twj).map(|(f, _)| f))
        .filter_map(|f| match f {
            TableFactor::Table { name, alias, .. } => Some(match alias {
                Some(a) => crate::sql::fold_ident(&a.name),
                None => name_parts(name).last().cloned().unwrap_or_default(),
            }),
            _ => None,
        })
        .collect();
    let mut outer_only = Vec::new();
    if let Some(filter) = s.selection.take() {
        let mut conjuncts = Vec::new();
        split_and(filter, &mut conjuncts);
        // outer expression (as written) → the inner column it equals.
        let mut equal: Vec<(String, Expr)> = Vec::new();
        for c in &conjuncts {
            if let Expr::BinaryOp {
                left,
                op: BinaryOperator::Eq,
                right,
            } = c
            {
                for (a, b) in [(left, right), (right, left)] {
                    if refs(a, &inner) == (true, false) && refs(b, &inner) == (false, true) {
                        equal.push((b.to_string(), a.as_ref().clone()));
                    }
                }
            }
        }
        let mut kept = Vec::new();
        for mut c in conjuncts {
            match refs(&c, &inner) {
                (false, true) => outer_only.push(c),
                (true, true) if !is_equality(&c) => {
                    let _ = VisitMut::visit(&mut c, &mut ReplaceOuter { equal: &equal });
                    kept.push(c);
                }
                _ => kept.push(c),
            }
        }
        s.selection = join_and(kept);
    }
    if let Some(SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. }) =
        s.projection.first_mut()
    {
        let value = std::mem::replace(e, Expr::value(Value::Null));
        *e = call("max", vec![value]);
    }
    join_and(outer_only)
}

fn is_equality(e: &Expr) -> bool {
    matches!(
        e,
        Expr::BinaryOp {
            op: BinaryOperator::Eq,
            ..
        }
    )
}

fn split_and(e: Expr, out: &mut Vec<Expr>) {
    match e {
        Expr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => {
            split_and(*left, out);
            split_and(*right, out);
        }
        Expr::Nested(inner)
            if matches!(
                inner.as_ref(),
                Expr::BinaryOp {
                    op: BinaryOperator::And,
                    ..
                }
            ) =>
        {
            split_and(*inner, out)
        }
        other => out.push(other),
    }
}

fn join_and(conjuncts: Vec<Expr>) -> Option<Expr> {
    conjuncts.into_iter().reduce(|a, b| Expr::BinaryOp {
        left: Box::new(a),
        op: BinaryOperator::And,
        right: Box::new(b),
    })
}

/// Whether `e` refers to columns of the subquery's own relations (`inner` aliases; an
/// unqualified name counts as one of them) and to columns of an outer query.
fn refs(e: &Expr, inner: &[String]) -> (bool, bool) {
    struct Refs<'a> {
        inner: &'a [String],
        found: (bool, bool),
    }
    impl Visitor for Refs<'_> {
        type Break = ();
        fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
            match e {
                Expr::Identifier(_) => self.found.0 = true,
                Expr::CompoundIdentifier(parts) if parts.len() >= 2 => {
                    let q = crate::sql::fold_ident(&parts[parts.len() - 2]);
                    if self.inner.contains(&q) {
                        self.found.0 = true;
                    } else {
                        self.found.1 = true;
                    }
                }
                _ => {}
            }
            ControlFlow::Continue(())
        }
    }
    let mut r = Refs {
        inner,
        found: (false, false),
    };
    let _ = e.visit(&mut r);
    r.found
}

/// Replaces outer expressions by the inner columns they are equal to.
struct ReplaceOuter<'a> {
    equal: &'a [(String, Expr)],
}

impl VisitorMut for ReplaceOuter<'_> {
    type Break = ();
    fn post_visit_expr(&mut self, e: &mut Expr) -> ControlFlow<()> {
        if matches!(e, Expr::CompoundIdentifier(_)) {
            let text = e.to_string();
            if let Some((_, inner)) = self.equal.iter().find(|(outer, _)| *outer == text) {
                *e = inner.clone();
            }
        }
        ControlFlow::Continue(())
    }
}

/// The relations of a FROM item with whether each is inner-joined (its emptiness empties
/// the result).
fn factors(twj: &TableWithJoins) -> impl Iterator<Item = (&TableFactor, bool)> {
    std::iter::once((&twj.relation, true)).chain(twj.joins.iter().map(|j| {
        let inner = matches!(
            j.join_operator,
            JoinOperator::Join(_) | JoinOperator::Inner(_) | JoinOperator::CrossJoin(_)
        );
        (&j.relation, inner)
    }))
}

/// The table's name when `f` names a table of `pg_catalog` (qualified, as psql writes them).
fn catalog_table(f: &TableFactor) -> Option<String> {
    let TableFactor::Table {
        name, args: None, ..
    } = f
    else {
        return None;
    };
    match name_parts(name).as_slice() {
        [schema, table] if schema == PG_CATALOG => Some(table.clone()),
        _ => None,
    }
}

fn joins_empty_catalog_table(select: &Select) -> bool {
    select.from.iter().any(|twj| {
        let outer_after = twj.joins.iter().any(|j| {
            matches!(
                j.join_operator,
                JoinOperator::Right(_) | JoinOperator::RightOuter(_) | JoinOperator::FullOuter(_)
            )
        });
        !outer_after
            && factors(twj).any(|(f, inner)| {
                inner && catalog_table(f).is_some_and(|t| EMPTY_TABLES.contains(&t.as_str()))
            })
    })
}

const AGGREGATES: [&str; 13] = [
    "count",
    "sum",
    "min",
    "max",
    "avg",
    "array_agg",
    "string_agg",
    "bool_and",
    "bool_or",
    "every",
    "json_agg",
    "jsonb_agg",
    "json_object_agg",
];

/// Whether a SELECT aggregates (GROUP BY, HAVING, or an aggregate call in its own select
/// list): over no rows it still returns one.
fn aggregates(select: &Select) -> bool {
    let grouped = match &select.group_by {
        GroupByExpr::All(_) => true,
        GroupByExpr::Expressions(e, _) => !e.is_empty(),
    };
    if grouped || select.having.is_some() {
        return true;
    }
    struct Finder {
        depth: usize,
        found: bool,
    }
    impl Visitor for Finder {
        type Break = ();
        fn pre_visit_query(&mut self, _: &Query) -> ControlFlow<()> {
            self.depth += 1;
            ControlFlow::Continue(())
        }
        fn post_visit_query(&mut self, _: &Query) -> ControlFlow<()> {
            self.depth -= 1;
            ControlFlow::Continue(())
        }
        fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
            if let Expr::Function(f) = e {
                let name = f.name.0.last().map(|p| p.to_string().to_ascii_lowercase());
                if self.depth == 0
                    && f.over.is_none()
                    && name.is_some_and(|n| AGGREGATES.contains(&n.as_str()))
                {
                    self.found = true;
                    return ControlFlow::Break(());
                }
            }
            ControlFlow::Continue(())
        }
    }
    let mut finder = Finder {
        depth: 0,
        found: false,
    };
    for item in &select.projection {
        let _ = item.visit(&mut finder);
    }
    finder.found
}

/// Whether a query body is made of selects whose WHERE is `false`.
fn returns_nothing(body: &SetExpr) -> bool {
    match body {
        SetExpr::Select(s) => matches!(
            &s.selection,
            Some(Expr::Value(v)) if v.value == Value::Boolean(false)
        ),
        SetExpr::SetOperation { left, right, .. } => {
            returns_nothing(left) && returns_nothing(right)
        }
        SetExpr::Query(q) => returns_nothing(&q.body),
        _ => false,
    }
}

/// Makes a SELECT that returns no rows plannable: each output keeps its name and becomes a
/// NULL of type text, and WHERE is `false`.
fn empty_select(select: &mut Select) {
    if select.projection.iter().any(|i| {
        matches!(
            i,
            SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..)
        )
    }) {
        return;
    }
    let null_text = || Expr::Cast {
        kind: CastKind::Cast,
        expr: Box::new(Expr::value(Value::Null)),
        data_type: DataType::Text,
        array: false,
        format: None,
    };
    for item in &mut select.projection {
        let alias = match item {
            SelectItem::ExprWithAlias { alias, .. } => alias.clone(),
            SelectItem::UnnamedExpr(e) => Ident::with_quote('"', crate::sql::pg_column_name(e)),
            _ => continue,
        };
        *item = SelectItem::ExprWithAlias {
            expr: null_text(),
            alias,
        };
    }
    select.selection = Some(Expr::value(Value::Boolean(false)));
}
