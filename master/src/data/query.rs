//! Listing queries in the shape of Buildbot's data API: `field=value`,
//! `field__gt=value` (and `__ne`, `__lt`, `__le`, `__ge`, `__contains`), `order=-field`,
//! `limit`, `offset`. Each collection says which fields exist and their types;
//! an unknown field or a malformed value is an error for the client, not a crash.

use sea_orm::sea_query::SimpleExpr;
use sea_orm::{
    ColumnTrait, DatabaseConnection, EntityTrait, Order, PaginatorTrait, QueryFilter, QueryOrder,
    QuerySelect, Select,
};

/// A comparison in a filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    /// The text holds the value (`__contains`), or for a number, equals it.
    Contains,
}

/// `field op value[,value…]` (several values of an `eq` filter mean "any of").
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    pub field: String,
    pub op: Op,
    pub values: Vec<String>,
}

/// A parsed listing request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ListQuery {
    pub filters: Vec<Filter>,
    /// Field and whether the order is descending.
    pub order: Vec<(String, bool)>,
    pub limit: Option<u64>,
    pub offset: Option<u64>,
    /// Count every match (a second, `COUNT(*)`, query) for the answer's
    /// total. Off by default: the total is then the rows returned, which is
    /// what Buildbot 4.3's REST API answers for every list it pages in the
    /// database (`/builds?limit=3` says `"total": 3` whatever matches), and
    /// at a million rows the count costs more than the page.
    pub count_matches: bool,
    /// Show free-text fields whole. Lists cut them at [`LIST_TEXT_CHARS`]
    /// (in the query, so a page of 1 MB reasons is never read whole); one
    /// object's path and page show them whole (see [`ListQuery::whole`]).
    pub whole_text: bool,
}

/// How a field's text value is read.
#[derive(Debug, Clone, Copy)]
pub enum FieldKind<C> {
    Int(C),
    Float(C),
    Bool(C),
    Text(C),
    /// A boolean that is true when the column is not NULL (`complete` ↔ `complete_at`).
    NotNull(C),
}

/// Parameters that are not filters.
const RESERVED: &[&str] = &["order", "limit", "offset", "field", "property"];

/// What is wrong with a list request (the caller's mistake: a 400 answer).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("{param} must be a whole number from 0 to {MAX_COUNT}, not '{value}'")]
    BadCount { param: &'static str, value: String },
    #[error("unknown operator '__{0}'")]
    UnknownOperator(String),
    #[error("unknown field '{0}'")]
    UnknownField(String),
    #[error("cannot order by unknown field '{0}'")]
    UnknownOrderField(String),
    #[error("'{field}' must be {expected}, not '{value}'")]
    BadValue {
        field: String,
        expected: &'static str,
        value: String,
    },
    #[error("'{0}' must be true or false")]
    NotABoolean(String),
    #[error("'{0}' can only be compared with = or __ne")]
    EqualityOnly(String),
    #[error("more than {MAX_FILTERS} filters in one request")]
    TooManyFilters,
    #[error("more than {MAX_VALUES_PER_FILTER} values for '{0}'")]
    TooManyValues(String),
}

/// Filters one request may have, and values one filter may list: far more
/// than a page or a script needs, and far less than makes the database refuse
/// the query (SQLite's expression depth, its bound parameters).
pub const MAX_FILTERS: usize = 64;
pub const MAX_VALUES_PER_FILTER: usize = 1000;

/// Rows in a page when the request names no `limit`, and the most it may
/// name (a larger `limit` gets this many). Buildbot's own pages ask for
/// 50 to 200 rows at a time; with [`LIST_TEXT_CHARS`] this keeps one answer a
/// few MiB however long the history or its texts.
pub const DEFAULT_PAGE: u64 = 500;
pub const MAX_PAGE: u64 = 2000;

/// Characters of a free-text field (a reason, a property's value, a state
/// string, a change's comments) that a list shows; a longer one ends in `…`.
/// The whole text is stored, and shown on its object's own path and page.
pub const LIST_TEXT_CHARS: usize = 1000;

/// The largest `limit` or `offset`: the databases bind them as signed 64-bit
/// numbers, and a larger one would fail there instead of here.
pub const MAX_COUNT: u64 = i64::MAX as u64;

/// A `limit` or `offset` value: a whole number up to [`MAX_COUNT`].
pub fn count(param: &'static str, value: &str) -> Result<u64, QueryError> {
    value
        .parse::<u64>()
        .ok()
        .filter(|n| *n <= MAX_COUNT)
        .ok_or_else(|| QueryError::BadCount {
            param,
            value: value.to_string(),
        })
}

impl ListQuery {
    pub fn parse(params: &[(String, String)]) -> Result<ListQuery, QueryError> {
        let mut q = ListQuery::default();
        for (key, value) in params {
            match key.as_str() {
                "order" => {
                    for part in value.split(',').filter(|p| !p.is_empty()) {
                        match part.strip_prefix('-') {
                            Some(f) => q.order.push((f.to_string(), true)),
                            None => q.order.push((part.to_string(), false)),
                        }
                    }
                }
                "limit" => q.limit = Some(count("limit", value)?),
                "offset" => q.offset = Some(count("offset", value)?),
                k if RESERVED.contains(&k) => {}
                k => {
                    let (field, op) = match k.rsplit_once("__") {
                        Some((f, "ne")) => (f, Op::Ne),
                        Some((f, "lt")) => (f, Op::Lt),
                        Some((f, "le")) => (f, Op::Le),
                        Some((f, "gt")) => (f, Op::Gt),
                        Some((f, "ge")) => (f, Op::Ge),
                        Some((f, "eq")) => (f, Op::Eq),
                        Some((f, "contains")) => (f, Op::Contains),
                        Some((_, other)) => {
                            return Err(QueryError::UnknownOperator(other.to_string()));
                        }
                        None => (k, Op::Eq),
                    };
                    let values: Vec<String> = value.split(',').map(str::to_string).collect();
                    if values.len() > MAX_VALUES_PER_FILTER {
                        return Err(QueryError::TooManyValues(field.to_string()));
                    }
                    q.filters.push(Filter {
                        field: field.to_string(),
                        op,
                        values,
                    });
                    if q.filters.len() > MAX_FILTERS {
                        return Err(QueryError::TooManyFilters);
                    }
                }
            }
        }
        Ok(q)
    }

    /// This query with a filter matching any of `values` (`field=a,b,c`).
    pub fn with_any(
        mut self,
        field: &str,
        values: impl IntoIterator<Item = impl ToString>,
    ) -> ListQuery {
        self.filters.push(Filter {
            field: field.into(),
            op: Op::Eq,
            values: values.into_iter().map(|v| v.to_string()).collect(),
        });
        self
    }

    /// This query with one more equality filter (for nested paths like
    /// `/builders/3/builds`).
    /// The query of one object's path or page: its texts are shown whole.
    pub fn whole(mut self) -> ListQuery {
        self.whole_text = true;
        self
    }

    pub fn with_eq(mut self, field: &str, value: impl ToString) -> ListQuery {
        self.filters.push(Filter {
            field: field.into(),
            op: Op::Eq,
            values: vec![value.to_string()],
        });
        self
    }
}

fn parse_value(
    kind_name: &'static str,
    field: &str,
    text: &str,
) -> Result<sea_orm::Value, QueryError> {
    let bad = || QueryError::BadValue {
        field: field.to_string(),
        expected: kind_name,
        value: text.to_string(),
    };
    Ok(match kind_name {
        "a whole number" => text.parse::<i64>().map_err(|_| bad())?.into(),
        "a number" => text.parse::<f64>().map_err(|_| bad())?.into(),
        "true or false" => parse_bool(text).ok_or_else(bad)?.into(),
        _ => text.to_string().into(),
    })
}

fn parse_bool(text: &str) -> Option<bool> {
    match text {
        "true" | "1" | "yes" => Some(true),
        "false" | "0" | "no" => Some(false),
        _ => None,
    }
}

fn condition<C: ColumnTrait>(col: C, op: Op, v: sea_orm::Value) -> SimpleExpr {
    match op {
        Op::Eq => col.eq(v),
        Op::Ne => col.ne(v),
        Op::Lt => col.lt(v),
        Op::Le => col.lte(v),
        Op::Gt => col.gt(v),
        Op::Ge => col.gte(v),
        Op::Contains => match v {
            sea_orm::Value::String(Some(text)) => col.contains(text.as_str()),
            other => col.eq(other),
        },
    }
}

/// Apply the query's filters and order to `select`; `fields` maps an API field
/// name to its column. Limit and offset are applied by [`page`].
pub fn apply<E: EntityTrait>(
    mut select: Select<E>,
    q: &ListQuery,
    fields: &dyn Fn(&str) -> Option<FieldKind<E::Column>>,
) -> Result<Select<E>, QueryError> {
    for f in &q.filters {
        let kind = fields(&f.field).ok_or_else(|| QueryError::UnknownField(f.field.clone()))?;
        let (col, kind_name) = match kind {
            FieldKind::Int(c) => (c, "a whole number"),
            FieldKind::Float(c) => (c, "a number"),
            FieldKind::Bool(c) => (c, "true or false"),
            FieldKind::Text(c) => (c, "text"),
            FieldKind::NotNull(c) => {
                let want = parse_bool(&f.values[0])
                    .ok_or_else(|| QueryError::NotABoolean(f.field.clone()))?;
                let want = if f.op == Op::Ne { !want } else { want };
                select = if want {
                    select.filter(c.is_not_null())
                } else {
                    select.filter(c.is_null())
                };
                continue;
            }
        };
        if f.op == Op::Eq && f.values.len() > 1 {
            let values = f
                .values
                .iter()
                .map(|v| parse_value(kind_name, &f.field, v))
                .collect::<Result<Vec<_>, _>>()?;
            select = select.filter(col.is_in(values));
        } else {
            let v = parse_value(kind_name, &f.field, &f.values.join(","))?;
            select = select.filter(condition(col, f.op, v));
        }
    }
    for (field, desc) in &q.order {
        let kind = fields(field).ok_or_else(|| QueryError::UnknownOrderField(field.clone()))?;
        let col = match kind {
            FieldKind::Int(c)
            | FieldKind::Float(c)
            | FieldKind::Bool(c)
            | FieldKind::Text(c)
            | FieldKind::NotNull(c) => c,
        };
        select = select.order_by(col, if *desc { Order::Desc } else { Order::Asc });
    }
    Ok(select)
}

/// Read one page of what `select` matches, in `default_order` unless the query
/// orders it, with its total: the rows returned, or every match when the
/// query asks for [`ListQuery::count_matches`]. What every `list_*` of the
/// data layer answers.
pub async fn fetch_page<E>(
    db: &DatabaseConnection,
    mut select: Select<E>,
    q: &ListQuery,
    default_order: (E::Column, Order),
) -> Result<(Vec<E::Model>, u64), sea_orm::DbErr>
where
    E: EntityTrait,
    E::Model: Send + Sync,
{
    if q.order.is_empty() {
        select = select.order_by(default_order.0, default_order.1);
    }
    let rows = page(select.clone(), q).all(db).await?;
    let total = if q.count_matches {
        select.count(db).await?
    } else {
        rows.len() as u64
    };
    Ok((rows, total))
}

/// Apply offset and limit: [`DEFAULT_PAGE`] rows unless the query asks for
/// fewer, and never more than [`MAX_PAGE`].
fn page<E: EntityTrait>(select: Select<E>, q: &ListQuery) -> Select<E> {
    let select = match q.offset {
        Some(o) => select.offset(o),
        None => select,
    };
    select.limit(q.limit.unwrap_or(DEFAULT_PAGE).min(MAX_PAGE))
}

/// Select every column of `E`, the `long` ones cut to one character more
/// than [`LIST_TEXT_CHARS`] by the database unless the query shows texts
/// whole; [`shorten`] then marks the cut ones. `substr` counts characters on
/// both SQLite and PostgreSQL.
pub fn cut_long_text<E: EntityTrait>(
    select: Select<E>,
    long: &[E::Column],
    q: &ListQuery,
) -> Select<E> {
    use sea_orm::sea_query::{Expr, Func};
    use sea_orm::{IdenStatic, Iterable};
    if q.whole_text {
        return select;
    }
    let long: Vec<&str> = long.iter().map(|c| c.as_str()).collect();
    let mut select = select.select_only();
    for column in E::Column::iter() {
        if long.contains(&column.as_str()) {
            let cut = Func::cust("substr")
                .arg(Expr::col((E::default(), column)))
                // 32-bit: PostgreSQL has no substr(text, bigint, bigint).
                .arg(1i32)
                .arg(LIST_TEXT_CHARS as i32 + 1);
            select = select.expr_as(cut, column.as_str());
        } else {
            select = select.column(column);
        }
    }
    select
}

/// Mark the `fields` of each item that [`cut_long_text`] cut (a no-op when
/// the query shows texts whole).
pub fn mark_cut(items: &mut [serde_json::Value], fields: &[&str], q: &ListQuery) {
    if q.whole_text {
        return;
    }
    for item in items {
        for field in fields {
            if let Some(serde_json::Value::String(text)) = item.get_mut(*field)
                && let std::borrow::Cow::Owned(short) = shorten(text)
            {
                *text = short;
            }
        }
    }
}

/// A text [`cut_long_text`] read: over [`LIST_TEXT_CHARS`] characters means
/// it was cut, and it then ends in `…`.
pub fn shorten(text: &str) -> std::borrow::Cow<'_, str> {
    match text.char_indices().nth(LIST_TEXT_CHARS) {
        Some((at, _)) => format!("{}…", &text[..at]).into(),
        None => text.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn parses_buildbot_style_queries() {
        let q = ListQuery::parse(&params(&[
            ("builderid", "3"),
            ("number__gt", "10"),
            ("results", "0,1"),
            ("order", "-number"),
            ("limit", "5"),
        ]))
        .unwrap();
        assert_eq!(q.filters.len(), 3);
        assert_eq!(q.filters[1].op, Op::Gt);
        assert_eq!(q.filters[2].values, vec!["0", "1"]);
        assert_eq!(q.order, vec![("number".to_string(), true)]);
        assert_eq!(q.limit, Some(5));
        assert_eq!(
            ListQuery::parse(&params(&[("limit", "-1")])).unwrap_err(),
            QueryError::BadCount {
                param: "limit",
                value: "-1".into()
            }
        );
        assert_eq!(
            ListQuery::parse(&params(&[("number__xx", "1")]))
                .unwrap_err()
                .to_string(),
            "unknown operator '__xx'"
        );
    }
}
