//! Offset pagination shared by every list route: `?limit=&offset=`, answered as
//! `{"items": [...], "limit": n, "offset": n, "next_offset": n | null}`.

use serde::{Deserialize, Serialize};

use crate::error::{AppError, Result};

const DEFAULT_LIMIT: u64 = 50;
const MAX_LIMIT: u64 = 200;

/// The query parameters as sent. (Routes with filters of their own repeat these two
/// fields rather than `#[serde(flatten)]` them: flattening makes serde_urlencoded
/// read numbers as strings.)
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Items per page, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u64>,
    /// Items to skip (default 0).
    pub offset: Option<u64>,
}

/// Checked pagination parameters.
#[derive(Debug, Clone, Copy)]
pub struct PageParams {
    pub limit: u64,
    pub offset: u64,
}

impl PageQuery {
    pub fn checked(&self) -> Result<PageParams> {
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(AppError::validation(
                "limit",
                format!("limit must be within 1..={MAX_LIMIT}"),
            ));
        }
        let offset = self.offset.unwrap_or(0);
        if offset > i64::MAX as u64 {
            return Err(AppError::validation("offset", "offset is too large"));
        }
        Ok(PageParams { limit, offset })
    }
}

impl PageParams {
    /// Rows to fetch: one more than the page, to know whether another page follows.
    pub fn fetch(&self) -> u64 {
        self.limit + 1
    }
}

/// One page of a list.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub limit: u64,
    pub offset: u64,
    /// The offset of the next page; null on the last one.
    pub next_offset: Option<u64>,
}

impl<T> Page<T> {
    /// Builds the page from `rows` fetched with [`PageParams::fetch`].
    pub fn from_rows<R>(mut rows: Vec<R>, params: PageParams, view: impl Fn(R) -> T) -> Self {
        let more = rows.len() as u64 > params.limit;
        rows.truncate(params.limit as usize);
        Self {
            items: rows.into_iter().map(view).collect(),
            limit: params.limit,
            offset: params.offset,
            next_offset: more.then_some(params.offset + params.limit),
        }
    }
}
