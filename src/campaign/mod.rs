//! Key-rotation campaigns beyond sending: choosing the orders from the account, fresh keys and
//! CSRs, filling payloads from the live order, domain control (the token export and the
//! checks), approvals, collecting the issued certificates and running the deploy hook for each.

pub mod approve;
pub mod collect;
pub mod dcv;
pub mod deploy;
pub mod fill;
pub mod keygen;
pub mod select;

use crate::api::ApiError;
use crate::journal::SentRequest;
use crate::limiter::Timing;

/// The journal's record of one request (for [`crate::journal::Journal::record_request`]): its
/// kind and order, when its permit was taken and ended, and how it went.
pub fn sent<T>(
    kind: &'static str,
    order_id: Option<i64>,
    timing: Timing,
    result: &Result<T, ApiError>,
) -> SentRequest {
    let (http_status, outcome) = match result {
        Ok(_) => (Some(200), "ok".to_owned()),
        Err(err) => (err.http_status(), err.to_string()),
    };
    SentRequest {
        kind,
        order_id,
        started_at: timing.admitted_at,
        finished_at: timing.ended_at,
        http_status,
        outcome,
    }
}
