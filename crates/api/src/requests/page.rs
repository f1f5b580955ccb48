//! Pages of a list: `limit` ([`rules::PAGE_LIMIT`], default [`DEFAULT_PAGE`]) and `cursor`,
//! the `next_cursor` of the page before, which names the last item it held. Every list
//! of the API (jobs, schedules, a schedule's runs, the audit log) pages this way, each
//! with its own cursor type.

use chrono::{DateTime, SecondsFormat, Utc};
use courier_core::{
    JobId,
    domain::{ScheduleName, rules},
};

use crate::error::ApiError;

/// Items of a page unless `limit` says otherwise.
pub const DEFAULT_PAGE: i64 = 50;

/// What a list's cursor is made of: the key its items are ordered by.
pub trait Cursor: Sized {
    /// The cursor a client sent back; `None` for one this API did not make.
    fn parse(raw: &str) -> Option<Self>;
    /// The cursor to send.
    fn render(&self) -> String;
}

impl Cursor for JobId {
    fn parse(raw: &str) -> Option<Self> {
        JobId::parse(raw).ok()
    }
    fn render(&self) -> String {
        self.to_string()
    }
}

/// The audit log's entry ids.
impl Cursor for i64 {
    fn parse(raw: &str) -> Option<Self> {
        raw.parse().ok().filter(|id| *id > 0)
    }
    fn render(&self) -> String {
        self.to_string()
    }
}

impl Cursor for ScheduleName {
    fn parse(raw: &str) -> Option<Self> {
        ScheduleName::parse(raw).ok()
    }
    fn render(&self) -> String {
        self.to_string()
    }
}

/// A schedule's occurrences, to the microsecond.
impl Cursor for DateTime<Utc> {
    fn parse(raw: &str) -> Option<Self> {
        DateTime::parse_from_rfc3339(raw)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }
    fn render(&self) -> String {
        self.to_rfc3339_opts(SecondsFormat::Micros, true)
    }
}

/// A page asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<C> {
    pub limit: i64,
    /// Where the page starts: after (or before, for newest-first lists) this item.
    pub cursor: Option<C>,
}

impl<C: Cursor> Default for Page<C> {
    fn default() -> Self {
        Self {
            limit: DEFAULT_PAGE,
            cursor: None,
        }
    }
}

impl<C: Cursor> Page<C> {
    /// Reads `limit` or `cursor` into this page; `false` for any other parameter (the
    /// caller's own, or unknown).
    ///
    /// # Errors
    /// A limit out of range, or a cursor this API did not make: 422 naming it.
    pub fn take(&mut self, key: &str, value: &str) -> Result<bool, ApiError> {
        no_nul(key, value)?;
        match key {
            "limit" => {
                let range = rules::PAGE_LIMIT;
                self.limit = value
                    .parse::<i64>()
                    .ok()
                    .filter(|l| range.contains(*l))
                    .ok_or_else(|| {
                        let (min, max) = (range.min, range.max);
                        ApiError::field("limit", format!("must be between {min} and {max}"))
                    })?;
            }
            "cursor" => {
                self.cursor =
                    Some(C::parse(value).ok_or_else(|| {
                        ApiError::field("cursor", "is not a cursor from this API")
                    })?);
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// A query string of only `limit` and `cursor`.
    ///
    /// # Errors
    /// As [`Self::take`], and 400 for any other parameter.
    pub fn parse(query: Option<&str>) -> Result<Self, ApiError> {
        let mut page = Self::default();
        for (key, value) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            if !page.take(&key, &value)? {
                return Err(unknown(&key));
            }
        }
        Ok(page)
    }

    /// The `next_cursor` of a page that came back as `items`: the key of its last item
    /// when it is full (there may be more), none when it is not (it is the last page).
    pub fn next<T>(&self, items: &[T], key: impl Fn(&T) -> C) -> Option<String> {
        (items.len() as i64 == self.limit)
            .then(|| items.last().map(|item| key(item).render()))
            .flatten()
    }
}

/// PostgreSQL's text cannot hold U+0000: a value with it is refused, as a body's is
/// (`crate::extract`).
///
/// # Errors
/// 422 naming the parameter.
pub fn no_nul(key: &str, value: &str) -> Result<(), ApiError> {
    if value.contains('\0') {
        return Err(ApiError::field(key, NUL_MESSAGE));
    }
    Ok(())
}

/// What is said of a value holding U+0000.
pub const NUL_MESSAGE: &str = "must not hold the NUL character (U+0000)";

/// The 400 of a query parameter a route does not take.
pub fn unknown(key: &str) -> ApiError {
    ApiError::BadRequest(format!("unknown query parameter {key:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_page_names_its_last_item_and_a_short_one_nothing() {
        let page: Page<i64> = Page::parse(Some("limit=2&cursor=9")).unwrap();
        assert_eq!(page.cursor, Some(9));
        assert_eq!(page.next(&[8i64, 7], |i| *i).as_deref(), Some("7"));
        assert_eq!(page.next(&[8i64], |i| *i), None);
        assert!(Page::<i64>::parse(Some("cursor=-1")).is_err());
        assert!(Page::<i64>::parse(Some("limit=501")).is_err());
        assert!(Page::<i64>::parse(Some("sort=asc")).is_err());
    }
}
