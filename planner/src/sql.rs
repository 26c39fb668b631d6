//! SQL text handling that happens before DataFusion sees a statement: splitting a simple-query
//! string into statements, turning `CREATE STREAM` / `DROP STREAM` (which sqlparser does not
//! know) into their TABLE spelling plus a marker, hiding a stream's hidden columns from `*`,
//! naming a scalar table function's column after its alias, and naming every unnamed select-list
//! expression as PostgreSQL does ([`name_columns_as_postgres`]).

use std::collections::HashSet;

use datafusion::sql::sqlparser::ast::{
    CastKind, DataType, Distinct, Expr, GroupByExpr, Ident, ObjectName, ObjectNamePart, OrderBy,
    OrderByKind, Query, Select, SelectItem, SelectItemQualifiedWildcardKind, SetExpr,
    TableAliasColumnDef, TableFactor, Value, Values, VisitMut, VisitorMut,
    WildcardAdditionalOptions,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

/// Splits SQL text at top-level semicolons, respecting quotes, dollar quotes and comments.
/// Empty statements are dropped.
pub fn split_statements(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let chars: Vec<char> = sql.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\'' | '"' => {
                let q = c;
                cur.push(c);
                i += 1;
                while i < chars.len() {
                    cur.push(chars[i]);
                    if chars[i] == q {
                        if chars.get(i + 1) == Some(&q) {
                            cur.push(q);
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    i += 1;
                }
            }
            '-' if chars.get(i + 1) == Some(&'-') => {
                while i < chars.len() && chars[i] != '\n' {
                    cur.push(chars[i]);
                    i += 1;
                }
                continue;
            }
            '/' if chars.get(i + 1) == Some(&'*') => {
                let mut depth = 0;
                while i < chars.len() {
                    if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                        depth += 1;
                        cur.push_str("/*");
                        i += 2;
                        continue;
                    }
                    if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                        depth -= 1;
                        cur.push_str("*/");
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                        continue;
                    }
                    cur.push(chars[i]);
                    i += 1;
                }
                continue;
            }
            '$' => {
                // Dollar quote: $tag$ ... $tag$ (tag may be empty).
                let mut j = i + 1;
                while j < chars.len() && (chars[j].is_alphanumeric() || chars[j] == '_') {
                    j += 1;
                }
                if chars.get(j) == Some(&'$')
                    && !chars.get(i + 1).is_some_and(|c| c.is_ascii_digit())
                {
                    let tag: String = chars[i..=j].iter().collect();
                    cur.push_str(&tag);
                    i = j + 1;
                    let rest: String = chars[i..].iter().collect();
                    match rest.find(&tag) {
                        Some(pos) => {
                            let body = &rest[..pos + tag.len()];
                            cur.push_str(body);
                            i += body.chars().count();
                        }
                        None => {
                            cur.push_str(&rest);
                            i = chars.len();
                        }
                    }
                    continue;
                }
                cur.push(c);
            }
            ';' => {
                if !cur.trim().is_empty() {
                    out.push(std::mem::take(&mut cur));
                } else {
                    cur.clear();
                }
            }
            _ => cur.push(c),
        }
        i += 1;
    }
    if !cur.trim().is_empty() && !only_comments(&cur) {
        out.push(cur);
    }
    out
}

fn only_comments(s: &str) -> bool {
    s.lines().all(|l| {
        let t = l.trim();
        t.is_empty() || t.starts_with("--")
    })
}

/// Words of the statement, upper-cased, skipping leading whitespace and comments.
pub fn leading_words(sql: &str, n: usize) -> Vec<String> {
    let mut s = sql.trim_start();
    loop {
        if let Some(rest) = s.strip_prefix("--") {
            s = rest.split_once('\n').map_or("", |(_, r)| r).trim_start();
        } else if let Some(rest) = s.strip_prefix("/*") {
            s = rest.split_once("*/").map_or("", |(_, r)| r).trim_start();
        } else {
            break;
        }
    }
    s.split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
        .take(n)
        .map(|w| w.to_ascii_uppercase())
        .collect()
}

/// If `sql` is `CREATE STREAM ...` or `DROP STREAM ...`, returns it spelled with TABLE so
/// sqlparser parses it (the caller remembers that it was a stream).
pub fn rewrite_stream_ddl(sql: &str) -> Option<String> {
    let words = leading_words(sql, 2);
    if words.len() == 2 && (words[0] == "CREATE" || words[0] == "DROP") && words[1] == "STREAM" {
        let upper = sql.to_ascii_uppercase();
        let pos = upper.find("STREAM")?;
        let mut out = String::with_capacity(sql.len());
        out.push_str(&sql[..pos]);
        out.push_str("TABLE");
        out.push_str(&sql[pos + "STREAM".len()..]);
        return Some(out);
    }
    None
}

/// Replaces `*` and `stream.*` in every SELECT of `query` with the stream's user columns, so
/// the hidden columns show only when named. `columns_of` returns the user columns of a stream
/// named in FROM, or `None` for anything else.
pub fn hide_hidden_columns(
    query: &mut Query,
    columns_of: &dyn Fn(&ObjectName) -> Option<Vec<String>>,
) {
    if let Some(with) = &mut query.with {
        for cte in &mut with.cte_tables {
            hide_hidden_columns(&mut cte.query, columns_of);
        }
    }
    rewrite_set_expr(&mut query.body, columns_of);
}

fn rewrite_set_expr(body: &mut SetExpr, columns_of: &dyn Fn(&ObjectName) -> Option<Vec<String>>) {
    match body {
        SetExpr::Select(select) => rewrite_select(select, columns_of),
        SetExpr::Query(q) => hide_hidden_columns(q, columns_of),
        SetExpr::SetOperation { left, right, .. } => {
            rewrite_set_expr(left, columns_of);
            rewrite_set_expr(right, columns_of);
        }
        _ => {}
    }
}

/// A relation in FROM: the qualifier to use for its columns and, for a stream, its columns.
struct Relation {
    qualifier: Option<Vec<Ident>>,
    stream_columns: Option<Vec<String>>,
}

fn collect_relations(
    factor: &mut TableFactor,
    columns_of: &dyn Fn(&ObjectName) -> Option<Vec<String>>,
    out: &mut Vec<Relation>,
) {
    match factor {
        TableFactor::Table {
            name,
            alias,
            args: None,
            ..
        } => {
            let qualifier = match alias {
                Some(a) => Some(vec![a.name.clone()]),
                None => name
                    .0
                    .iter()
                    .map(|p| match p {
                        ObjectNamePart::Identifier(i) => Some(i.clone()),
                        _ => None,
                    })
                    .collect(),
            };
            out.push(Relation {
                qualifier,
                stream_columns: columns_of(name),
            });
        }
        TableFactor::Table {
            name,
            alias: Some(alias),
            args: Some(_),
            ..
        } => {
            // PostgreSQL names the one column of a function returning a scalar type after the
            // table alias (`SELECT g FROM generate_series(1, 3) g`); DataFusion calls it
            // `value`, so the alias gets the column list PostgreSQL implies.
            let function = name.0.last().map(|p| p.to_string().to_ascii_lowercase());
            if alias.columns.is_empty()
                && matches!(function.as_deref(), Some("generate_series" | "range"))
            {
                alias.columns = vec![TableAliasColumnDef {
                    name: alias.name.clone(),
                    data_type: None,
                }];
            }
            out.push(Relation {
                qualifier: Some(vec![alias.name.clone()]),
                stream_columns: None,
            });
        }
        TableFactor::Derived {
            subquery, alias, ..
        } => {
            hide_hidden_columns(subquery, columns_of);
            out.push(Relation {
                qualifier: alias.as_ref().map(|a| vec![a.name.clone()]),
                stream_columns: None,
            });
        }
        TableFactor::NestedJoin {
            table_with_joins,
            alias,
            ..
        } => {
            if alias.is_some() {
                out.push(Relation {
                    qualifier: None,
                    stream_columns: None,
                });
                return;
            }
            collect_relations(&mut table_with_joins.relation, columns_of, out);
            for j in &mut table_with_joins.joins {
                collect_relations(&mut j.relation, columns_of, out);
            }
        }
        _ => out.push(Relation {
            qualifier: None,
            stream_columns: None,
        }),
    }
}

fn plain_wildcard(o: &WildcardAdditionalOptions) -> bool {
    o.opt_ilike.is_none()
        && o.opt_exclude.is_none()
        && o.opt_except.is_none()
        && o.opt_replace.is_none()
        && o.opt_rename.is_none()
        && o.opt_alias.is_none()
}

fn column_items(qualifier: &[Ident], columns: &[String]) -> Vec<SelectItem> {
    columns
        .iter()
        .map(|c| {
            let mut parts = qualifier.to_vec();
            parts.push(Ident::with_quote('"', c.clone()));
            SelectItem::UnnamedExpr(Expr::CompoundIdentifier(parts))
        })
        .collect()
}

fn rewrite_select(select: &mut Select, columns_of: &dyn Fn(&ObjectName) -> Option<Vec<String>>) {
    let mut relations = Vec::new();
    for twj in &mut select.from {
        collect_relations(&mut twj.relation, columns_of, &mut relations);
        for j in &mut twj.joins {
            collect_relations(&mut j.relation, columns_of, &mut relations);
        }
    }
    if relations.iter().all(|r| r.stream_columns.is_none()) {
        return;
    }
    let mut projection = Vec::with_capacity(select.projection.len());
    for item in std::mem::take(&mut select.projection) {
        match item {
            SelectItem::Wildcard(ref o) if plain_wildcard(o) => {
                // Expand only if every relation can be named; otherwise keep `*` as is.
                if relations.iter().any(|r| r.qualifier.is_none()) {
                    projection.push(item);
                    continue;
                }
                for r in &relations {
                    let q = r.qualifier.clone().unwrap_or_default();
                    match &r.stream_columns {
                        Some(cols) => projection.extend(column_items(&q, cols)),
                        None => projection.push(SelectItem::QualifiedWildcard(
                            SelectItemQualifiedWildcardKind::ObjectName(ObjectName::from(q)),
                            o.clone(),
                        )),
                    }
                }
            }
            SelectItem::QualifiedWildcard(
                SelectItemQualifiedWildcardKind::ObjectName(ref name),
                ref o,
            ) if plain_wildcard(o) => {
                let wanted: Vec<String> = name
                    .0
                    .iter()
                    .map(|p| p.to_string().trim_matches('"').to_string())
                    .collect();
                let hit = relations.iter().find(|r| {
                    r.qualifier.as_ref().is_some_and(|q| {
                        let q: Vec<String> = q.iter().map(|i| i.value.clone()).collect();
                        q.ends_with(&wanted) || wanted.ends_with(&q)
                    })
                });
                match hit {
                    Some(Relation {
                        stream_columns: Some(cols),
                        ..
                    }) => {
                        let q: Vec<Ident> = name
                            .0
                            .iter()
                            .filter_map(|p| match p {
                                ObjectNamePart::Identifier(i) => Some(i.clone()),
                                _ => None,
                            })
                            .collect();
                        projection.extend(column_items(&q, cols));
                    }
                    _ => projection.push(item),
                }
            }
            other => projection.push(other),
        }
    }
    select.projection = projection;
}

/// Types integer constants as PostgreSQL does: a constant that fits 32 bits is `integer`
/// (`pg_typeof(1)`, `ARRAY[1, 2]` is `integer[]`, `2147483647 + 1` overflows with 22003), a
/// larger one `bigint`, where DataFusion makes every integer constant `Int64`. Each such
/// constant becomes `constant::integer`, which DataFusion folds back into one `Int32` literal.
///
/// Constants that are positions or counts rather than values stay as they are: `ORDER BY 1`
/// and `GROUP BY 1` (DataFusion reads a position only from a bare constant), `LIMIT` /
/// `OFFSET` / `FETCH`, and the arguments of table functions (`generate_series(1, 3)` takes
/// `bigint` constants). Runs after [`name_columns_as_postgres`], so output names do not change.
pub fn type_integer_constants(query: &mut Query) {
    /// Marks a constant to keep (sqlparser's `long` flag, which the PostgreSQL dialect never
    /// sets); [`Constants::post_visit_expr`] clears it again once it has passed it by.
    fn keep(e: &mut Expr) {
        if let Expr::Value(v) = e {
            if let Value::Number(_, long) = &mut v.value {
                *long = true;
            }
        }
    }
    struct Constants;
    impl VisitorMut for Constants {
        type Break = ();

        fn pre_visit_query(&mut self, q: &mut Query) -> std::ops::ControlFlow<()> {
            if let Some(OrderBy {
                kind: OrderByKind::Expressions(order),
                ..
            }) = &mut q.order_by
            {
                order.iter_mut().for_each(|o| keep(&mut o.expr));
            }
            if let Some(limit) = &mut q.limit_clause {
                let _ = limit.visit(&mut KeepAll);
            }
            if let Some(fetch) = &mut q.fetch {
                let _ = fetch.visit(&mut KeepAll);
            }
            std::ops::ControlFlow::Continue(())
        }

        fn pre_visit_select(&mut self, s: &mut Select) -> std::ops::ControlFlow<()> {
            if let GroupByExpr::Expressions(exprs, _) = &mut s.group_by {
                exprs.iter_mut().for_each(keep);
            }
            std::ops::ControlFlow::Continue(())
        }

        fn pre_visit_table_factor(&mut self, t: &mut TableFactor) -> std::ops::ControlFlow<()> {
            match t {
                TableFactor::Table { args: Some(_), .. }
                | TableFactor::Function { .. }
                | TableFactor::TableFunction { .. } => {
                    let _ = t.visit(&mut KeepAll);
                }
                _ => {}
            }
            std::ops::ControlFlow::Continue(())
        }

        fn post_visit_expr(&mut self, e: &mut Expr) -> std::ops::ControlFlow<()> {
            if let Expr::Value(v) = e {
                if let Value::Number(n, long) = &mut v.value {
                    if *long {
                        *long = false;
                    } else if n.parse::<i32>().is_ok() {
                        let constant = std::mem::replace(e, Expr::value(Value::Null));
                        *e = Expr::Cast {
                            kind: CastKind::DoubleColon,
                            expr: Box::new(constant),
                            data_type: DataType::Integer(None),
                            array: false,
                            format: None,
                        };
                    }
                }
            }
            std::ops::ControlFlow::Continue(())
        }
    }
    /// Marks every constant below it to keep.
    struct KeepAll;
    impl VisitorMut for KeepAll {
        type Break = ();

        fn pre_visit_expr(&mut self, e: &mut Expr) -> std::ops::ControlFlow<()> {
            keep(e);
            std::ops::ControlFlow::Continue(())
        }
    }
    let _ = query.visit(&mut Constants);
}

/// `INSERT ... SELECT ... FROM (VALUES ...) AS t(x)`: DataFusion types every VALUES list of an
/// INSERT's source by the target table's columns, so a nested list of another width fails
/// ("Inconsistent data length across values list"), where PostgreSQL types a nested list on
/// its own. A VALUES list below the source's own body becomes the same rows as
/// `SELECT ... AS column1, ... UNION ALL SELECT ...` (VALUES names its columns so).
pub fn nested_values_as_selects(source: &mut Query) {
    struct Nested {
        depth: usize,
    }
    impl VisitorMut for Nested {
        type Break = ();

        fn pre_visit_query(&mut self, q: &mut Query) -> std::ops::ControlFlow<()> {
            if self.depth > 0 {
                if let SetExpr::Values(v) = q.body.as_ref() {
                    if let Some(body) = values_as_union(v) {
                        *q.body = body;
                    }
                }
            }
            self.depth += 1;
            std::ops::ControlFlow::Continue(())
        }

        fn post_visit_query(&mut self, _: &mut Query) -> std::ops::ControlFlow<()> {
            self.depth = self.depth.saturating_sub(1);
            std::ops::ControlFlow::Continue(())
        }
    }
    let _ = source.visit(&mut Nested { depth: 0 });
}

/// The rows of `v` as a chain of `SELECT`s joined by `UNION ALL` (see
/// [`nested_values_as_selects`]); `None` when the text does not parse back.
fn values_as_union(v: &Values) -> Option<SetExpr> {
    let selects: Vec<String> = v
        .rows
        .iter()
        .map(|row| {
            let items: Vec<String> = row
                .content
                .iter()
                .enumerate()
                .map(|(i, e)| format!("{e} AS column{}", i + 1))
                .collect();
            format!("SELECT {}", items.join(", "))
        })
        .collect();
    let q = Parser::new(&PostgreSqlDialect {})
        .try_with_sql(&selects.join(" UNION ALL "))
        .and_then(|mut p| p.parse_query())
        .ok()?;
    Some(*q.body)
}

/// Separates a column's PostgreSQL name from the suffix that keeps it unique for DataFusion,
/// which refuses two output columns of one name where PostgreSQL allows them
/// (`SELECT 1 + 1, 2 + 2` has two columns named `?column?`). Never in a name a client sees.
pub const NAME_SUFFIX_MARK: char = '\u{1}';

/// The name a client sees for an output column: the name without braid's uniqueness suffix.
pub fn display_name(name: &str) -> &str {
    name.split(NAME_SUFFIX_MARK).next().unwrap_or(name)
}

/// Names every unnamed select-list expression of every SELECT in `query` (subqueries, CTEs and
/// set operations included) the way PostgreSQL does — `count(*)` is `count`, `x::text` is `x`,
/// `1 + 1` is `?column?` — by giving it that name as an alias, where DataFusion would call it
/// `count(*)`, `CAST(x AS Utf8)` or `Int64(1) + Int64(1)`. Clients read rows by these names.
/// Plain column references keep DataFusion's own naming, which already is PostgreSQL's.
pub fn name_columns_as_postgres(query: &mut Query) {
    order_distinct_by_position(query);
    if let Some(with) = &mut query.with {
        for cte in &mut with.cte_tables {
            name_columns_as_postgres(&mut cte.query);
        }
    }
    name_set_expr(&mut query.body);
}

/// `SELECT DISTINCT e … ORDER BY e`: PostgreSQL sorts by the selected `e`. DataFusion plans an
/// ORDER BY expression again over the input's columns, which DISTINCT then refuses ("ORDER BY
/// expressions … must appear in select list"). An ORDER BY expression equal to an expression
/// of the select list becomes that item's position, which means the same thing. Only items
/// before any `*` have a known position; plain column names need nothing.
fn order_distinct_by_position(query: &mut Query) {
    let SetExpr::Select(select) = query.body.as_mut() else {
        return;
    };
    if !matches!(select.distinct, Some(Distinct::Distinct)) {
        return;
    }
    let Some(OrderBy {
        kind: OrderByKind::Expressions(order),
        ..
    }) = &mut query.order_by
    else {
        return;
    };
    for o in order {
        if matches!(
            o.expr,
            Expr::Identifier(_) | Expr::CompoundIdentifier(_) | Expr::Value(_)
        ) {
            continue;
        }
        let position = select
            .projection
            .iter()
            .take_while(|item| {
                !matches!(
                    item,
                    SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..)
                )
            })
            .position(|item| match item {
                SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => {
                    *e == o.expr
                }
                _ => false,
            });
        if let Some(i) = position {
            o.expr = Expr::value(Value::Number((i + 1).to_string(), false));
        }
    }
}

fn name_set_expr(body: &mut SetExpr) {
    match body {
        SetExpr::Select(select) => name_select(select),
        SetExpr::Query(q) => name_columns_as_postgres(q),
        SetExpr::SetOperation { left, right, .. } => {
            name_set_expr(left);
            name_set_expr(right);
        }
        _ => {}
    }
}

fn name_factor(factor: &mut TableFactor) {
    match factor {
        TableFactor::Derived { subquery, .. } => name_columns_as_postgres(subquery),
        TableFactor::NestedJoin {
            table_with_joins, ..
        } => {
            name_factor(&mut table_with_joins.relation);
            for j in &mut table_with_joins.joins {
                name_factor(&mut j.relation);
            }
        }
        _ => {}
    }
}

fn name_select(select: &mut Select) {
    for twj in &mut select.from {
        name_factor(&mut twj.relation);
        for j in &mut twj.joins {
            name_factor(&mut j.relation);
        }
    }
    // Names the new aliases must not take: explicit aliases, and the columns the list names
    // (DataFusion refuses an output with both an unqualified `at` and a column `t.at`). Under a
    // `*`, whose columns are not known here, only `?column?` is sure not to be one of them.
    let mut taken: HashSet<String> = HashSet::new();
    let mut wildcard = false;
    for item in &select.projection {
        match item {
            SelectItem::ExprWithAlias { alias, .. } => {
                taken.insert(fold_ident(alias));
            }
            SelectItem::UnnamedExpr(e @ (Expr::Identifier(_) | Expr::CompoundIdentifier(_))) => {
                taken.insert(pg_column_name(e));
            }
            SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..) => wildcard = true,
            _ => {}
        }
    }
    // A column listed again (`SELECT v, v`) gets a suffix too: DataFusion refuses the same
    // column twice, PostgreSQL shows it twice under its name.
    let mut columns_seen: HashSet<String> = HashSet::new();
    for item in &mut select.projection {
        let SelectItem::UnnamedExpr(e) = item else {
            continue;
        };
        if matches!(e, Expr::Identifier(_) | Expr::CompoundIdentifier(_))
            && columns_seen.insert(pg_column_name(e))
        {
            continue;
        }
        let name = pg_column_name(e);
        let mut unique = name.clone();
        let mut n = 1;
        if wildcard && name != "?column?" {
            n += 1;
            unique = format!("{name}{NAME_SUFFIX_MARK}{n}");
        }
        while !taken.insert(unique.clone()) {
            n += 1;
            unique = format!("{name}{NAME_SUFFIX_MARK}{n}");
        }
        *item = SelectItem::ExprWithAlias {
            expr: e.clone(),
            alias: Ident::with_quote('"', unique),
        };
    }
}

/// An identifier as PostgreSQL stores it: unquoted ones fold to lower case.
pub fn fold_ident(i: &Ident) -> String {
    if i.quote_style.is_some() {
        i.value.clone()
    } else {
        i.value.to_ascii_lowercase()
    }
}

/// PostgreSQL's name for an unnamed select-list expression (its `FigureColname`): a column
/// keeps its name, a function call, `CASE`, `EXISTS` and `ARRAY[...]` are named after the
/// keyword, a cast after what it casts (a constant: the type), anything else is `?column?`.
pub fn pg_column_name(e: &Expr) -> String {
    const UNNAMED: &str = "?column?";
    match e {
        Expr::Identifier(i) => fold_ident(i),
        Expr::CompoundIdentifier(parts) => parts.last().map_or(UNNAMED.into(), fold_ident),
        Expr::Function(f) => f
            .name
            .0
            .last()
            .and_then(|p| p.as_ident())
            .map_or(UNNAMED.into(), fold_ident),
        Expr::Nested(inner) | Expr::Collate { expr: inner, .. } => pg_column_name(inner),
        Expr::Cast { .. } => cast_name(e).0,
        Expr::TypedString(t) => pg_type_name(&t.data_type),
        Expr::Case { .. } => "case".into(),
        Expr::Exists { .. } => "exists".into(),
        Expr::Array(_) => "array".into(),
        Expr::Extract { .. } => "extract".into(),
        Expr::Substring { .. } => "substring".into(),
        Expr::Position { .. } => "position".into(),
        Expr::Overlay { .. } => "overlay".into(),
        Expr::Trim { .. } => "btrim".into(),
        Expr::Ceil { .. } => "ceil".into(),
        Expr::Floor { .. } => "floor".into(),
        Expr::AtTimeZone { .. } => "timezone".into(),
        Expr::Interval(_) => "interval".into(),
        Expr::CompoundFieldAccess { root, .. } => pg_column_name(root),
        Expr::Subquery(q) => match q.body.as_ref() {
            SetExpr::Select(s) => match s.projection.first() {
                Some(SelectItem::UnnamedExpr(e)) => pg_column_name(e),
                Some(SelectItem::ExprWithAlias { alias, .. }) => fold_ident(alias),
                _ => UNNAMED.into(),
            },
            _ => UNNAMED.into(),
        },
        _ => UNNAMED.into(),
    }
}

/// A cast's column name and its strength, as PostgreSQL's FigureColname decides: a name taken
/// from a type (a cast of something unnamed, a typed literal) or `case` is weak (1), and an
/// outer cast replaces a weak name with its own type's, so `2::float8::text` is `text` while
/// `x::float8::text` stays `x` (a column's or function's name is strong, 2).
fn cast_name(e: &Expr) -> (String, u8) {
    match e {
        Expr::Nested(inner) => cast_name(inner),
        Expr::Cast {
            expr, data_type, ..
        } => match cast_name(expr) {
            (_, 0 | 1) => (pg_type_name(data_type), 1),
            strong => strong,
        },
        Expr::TypedString(t) => (pg_type_name(&t.data_type), 1),
        Expr::Case { .. } => ("case".into(), 1),
        other => {
            let name = pg_column_name(other);
            let strength = if name == "?column?" { 0 } else { 2 };
            (name, strength)
        }
    }
}

/// The name PostgreSQL gives a type in a column name (`'1'::int` is `int4`).
fn pg_type_name(t: &DataType) -> String {
    let text = t.to_string().to_ascii_lowercase();
    let base = text.split('(').next().unwrap_or(&text).trim();
    match base {
        "int" | "integer" | "int4" => "int4",
        "bigint" | "int8" => "int8",
        "smallint" | "int2" => "int2",
        "real" | "float4" => "float4",
        "double precision" | "float8" | "double" | "float" => "float8",
        "boolean" | "bool" => "bool",
        "decimal" | "numeric" => "numeric",
        "character varying" | "varchar" => "varchar",
        "character" | "char" => "bpchar",
        "timestamp with time zone" | "timestamptz" => "timestamptz",
        "timestamp" | "timestamp without time zone" => "timestamp",
        "time" | "time without time zone" => "time",
        other => return other.to_string(),
    }
    .to_string()
}

/// Rewrites the text of every `INTERVAL '...'` constant without a field qualifier into the
/// words Arrow's parser reads exactly, after reading it as PostgreSQL does
/// ([`crate::interval_input`]): `interval '1 day 02:00:00'` stays a constant DataFusion folds,
/// and text that is no interval fails here with PostgreSQL's error, not with Arrow's.
pub fn canonical_intervals<T: VisitMut>(node: &mut T) -> crate::error::Result<()> {
    let mut failure = None;
    let _ = datafusion::sql::sqlparser::ast::visit_expressions_mut(node, |e| {
        if let Expr::Interval(iv) = e {
            if iv.leading_field.is_none() && iv.last_field.is_none() {
                if let Expr::Value(v) = iv.value.as_mut() {
                    if let Value::SingleQuotedString(text) = &mut v.value {
                        match crate::interval_input::canonical_interval_literal(text) {
                            Ok(canonical) => *text = canonical,
                            Err(err) => {
                                failure = Some(err);
                                return std::ops::ControlFlow::Break(());
                            }
                        }
                    }
                }
            }
        }
        std::ops::ControlFlow::Continue(())
    });
    failure.map_or(Ok(()), Err)
}

/// Rewrites the numeric constants DataFusion cannot read as a Decimal128 as written: one
/// with an exponent that leaves no fraction digits (`1e3`, read with a negative scale Arrow's
/// casts mishandle) becomes its digits cast to `numeric(p, 0)`; one of more than 38 digits
/// (`1e308`, and PostgreSQL's `numeric` holds it) becomes `double precision`, the closest
/// type braid has; one beyond `double precision` too is 22003, as PostgreSQL refuses one
/// beyond its `numeric`.
pub fn numeric_literals<T: VisitMut>(node: &mut T) -> crate::error::Result<()> {
    let mut overflow = false;
    use datafusion::sql::sqlparser::ast::{CastKind, DataType, ExactNumberInfo};
    let _ = datafusion::sql::sqlparser::ast::visit_expressions_mut(node, |e| {
        let Expr::Value(v) = e else {
            return std::ops::ControlFlow::<()>::Continue(());
        };
        let Value::Number(text, _) = &v.value else {
            return std::ops::ControlFlow::Continue(());
        };
        let Some((digits, scale)) = decimal_digits(text) else {
            return std::ops::ControlFlow::Continue(());
        };
        let significant = digits.trim_start_matches('0');
        // Digits the value needs as a Decimal128: checked before any are written out, so a
        // constant like `1e999999999` costs nothing.
        let whole_digits = (scale < 0).then(|| significant.len().max(1) as i64 - scale);
        let fits = significant.len() <= 38 && scale <= 38 && whole_digits.is_none_or(|d| d <= 38);
        let (expr, data_type) = if !fits {
            if text.parse::<f64>().is_ok_and(f64::is_infinite) {
                overflow = true;
                return std::ops::ControlFlow::Break(());
            }
            (
                Expr::Value(Value::SingleQuotedString(text.clone()).into()),
                DataType::DoublePrecision,
            )
        } else if scale < 0 && text.contains(['e', 'E']) {
            let whole = if significant.is_empty() {
                "0".to_string()
            } else {
                format!("{significant}{}", "0".repeat(scale.unsigned_abs() as usize))
            };
            let precision = whole.len() as u64;
            (
                Expr::Value(Value::Number(whole, false).into()),
                DataType::Decimal(ExactNumberInfo::PrecisionAndScale(precision, 0)),
            )
        } else {
            return std::ops::ControlFlow::Continue(());
        };
        *e = Expr::Cast {
            kind: CastKind::Cast,
            expr: Box::new(expr),
            data_type,
            array: false,
            format: None,
        };
        std::ops::ControlFlow::Continue(())
    });
    if overflow {
        return Err(crate::error::Error::NumericOverflow);
    }
    Ok(())
}

/// A constant with a point or an exponent as its digits (no point) and its scale (fraction
/// digits; negative when the exponent adds zeros): `1.50` is ("150", 2), `1e3` ("1", -3).
/// `None` for an integer, which stays an integer.
fn decimal_digits(text: &str) -> Option<(String, i64)> {
    if !text.contains(['.', 'e', 'E']) {
        return None;
    }
    let (mantissa, exp) = match text.find(['e', 'E']) {
        Some(i) => (&text[..i], text[i + 1..].parse::<i64>().ok()?),
        None => (text, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if !int.chars().chain(frac.chars()).all(|c| c.is_ascii_digit()) {
        return None;
    }
    Some((
        format!("{int}{frac}"),
        (frac.len() as i64).checked_sub(exp)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_constants_as_decimal_digits() {
        assert_eq!(decimal_digits("1.50"), Some(("150".into(), 2)));
        assert_eq!(decimal_digits("1e3"), Some(("1".into(), -3)));
        assert_eq!(decimal_digits("1.5E-3"), Some(("15".into(), 4)));
        assert_eq!(decimal_digits("42"), None);
        // An exponent that would overflow the scale is left to DataFusion, which refuses it.
        assert_eq!(decimal_digits(&format!("1e{}", i64::MIN)), None);
    }

    #[test]
    fn splits_on_top_level_semicolons_only() {
        let parts = split_statements("select 'a;b'; select \"x;\" ; -- c;\n select $$;$$;;");
        assert_eq!(parts.len(), 3, "{parts:?}");
        assert!(parts[0].contains("'a;b'"));
        assert!(parts[2].contains("$$;$$"));
        assert!(split_statements(" ; ;").is_empty());
    }

    #[test]
    fn rewrites_stream_ddl() {
        assert_eq!(
            rewrite_stream_ddl("create stream s (a int)").as_deref(),
            Some("create TABLE s (a int)")
        );
        assert_eq!(
            rewrite_stream_ddl("DROP STREAM IF EXISTS s").as_deref(),
            Some("DROP TABLE IF EXISTS s")
        );
        assert!(rewrite_stream_ddl("select 1").is_none());
    }
}
