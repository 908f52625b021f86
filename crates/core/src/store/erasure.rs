//! `pii_erasures` as the writers of masks see it (docs/security.md, "Erasure"): before a
//! transaction writes masks (the ingest's batch, the service's dead-letter import), it
//! takes the erasure lock shared and looks its values' markers up; an erased value's
//! masks are written as its token, and the value is never vaulted. `forget` takes the
//! same lock exclusive for its whole transaction ([`lock_exclusive`]).
//!
//! Why a lock: the lookup reads a snapshot, so without one a batch that looked before a
//! concurrent forget committed would then commit the raw mask (and a sealed value) after
//! the forget rewrote every row it could see. With it, either the batch commits first and
//! the forget (waiting for it) rewrites its rows, or the forget commits first and the
//! batch (waiting for it, then looking) finds the marker. One lock for all values: forget
//! is rare and short, and a batch holds most values' buckets anyway; a lock per value
//! would exhaust the shared lock table on a batch of thousands of messages.

use std::collections::HashMap;

use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{GenericClient, SimpleQueryMessage};

use super::StoreError;
use crate::crypto::{BlindIndex, ErasureKey, ErasureMarker, PiiField};
use crate::error::DbError;

/// The erasure lock: the one row of `pii_locks.erasure`, locked shared by writers of masks
/// and exclusive for an erasure, to the end of the transaction. A row, not an advisory
/// lock: locking it takes UPDATE on it, which only the function and the service have, so
/// no other login can stall the ingest (sql/V10__erasure_unlinks.sql).
const LOCK_SHARED: &str = "SELECT only_row FROM pii_locks.erasure FOR SHARE";
const LOCK_EXCLUSIVE: &str = "SELECT only_row FROM pii_locks.erasure FOR UPDATE";

/// Takes the erasure lock exclusive until the end of the caller's transaction: no writer
/// of masks is between its lookup and its commit meanwhile.
pub async fn lock_exclusive(tx: &impl GenericClient) -> Result<(), StoreError> {
    locked(tx.simple_query(LOCK_EXCLUSIVE).await?)
}

/// A lock statement's answer: the row, or an error if it is missing (a lock of no row
/// would hold nothing back).
fn locked(answer: Vec<SimpleQueryMessage>) -> Result<(), StoreError> {
    if answer.iter().any(|message| matches!(message, SimpleQueryMessage::Row(_))) {
        Ok(())
    } else {
        Err(StoreError::Db(DbError::other(
            "the erasure lock's row is missing from pii_locks.erasure (sql/V10__erasure_unlinks.sql)",
        )))
    }
}

/// One distinct value a transaction writes a mask of, with its marker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarkedValue {
    pub field: PiiField,
    pub mask: BlindIndex,
    pub marker: ErasureMarker,
}

/// The marker of each distinct (field, mask) of `values`, in (field, mask) order.
pub fn mark<'a>(
    key: &ErasureKey,
    values: impl IntoIterator<Item = (PiiField, &'a BlindIndex)>,
) -> Vec<MarkedValue> {
    let mut values: Vec<(PiiField, &BlindIndex)> = values.into_iter().collect();
    values.sort_unstable_by(|a, b| (a.0.as_str(), a.1).cmp(&(b.0.as_str(), b.1)));
    values.dedup();
    values
        .into_iter()
        .map(|(field, mask)| MarkedValue { field, mask: mask.clone(), marker: key.marker(field, mask) })
        .collect()
}

/// The erased values among those looked up: (field, mask) → the value's token.
#[derive(Debug, Default)]
pub struct Erased(HashMap<(PiiField, BlindIndex), BlindIndex>);

impl Erased {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The token to write for this value, if it was erased.
    pub fn token(&self, field: PiiField, mask: &BlindIndex) -> Option<&BlindIndex> {
        self.0.get(&(field, mask.clone()))
    }

    /// The mask to write: the value's token if it was erased, else the mask itself.
    pub fn masked(&self, field: PiiField, mask: &BlindIndex) -> BlindIndex {
        self.token(field, mask).unwrap_or(mask).clone()
    }
}

/// Takes the erasure lock shared (until the end of the caller's transaction), then looks
/// the markers up: one indexed query. Nothing to look up takes no lock.
pub async fn erased(tx: &impl GenericClient, values: &[MarkedValue]) -> Result<Erased, StoreError> {
    if values.is_empty() {
        return Ok(Erased::default());
    }
    // First the lock, then the lookup: its snapshot must be taken after any forget that
    // held the lock committed. The lookup is sent meanwhile as the unnamed statement
    // (pipelined: the server answers the lock first, then runs the lookup), so the two
    // cost one round trip and leave nothing on the session.
    let fields: Vec<&str> = values.iter().map(|v| v.field.as_str()).collect();
    let markers: Vec<&str> = values.iter().map(|v| v.marker.as_str()).collect();
    let params: [(&(dyn ToSql + Sync), Type); 2] =
        [(&fields, Type::TEXT_ARRAY), (&markers, Type::TEXT_ARRAY)];
    let (lock, lookup) = tokio::join!(
        biased;
        tx.simple_query(LOCK_SHARED),
        tx.query_typed(
            "SELECT e.field::text, e.marker::text, e.token::text FROM vault.pii_erasures e
               JOIN UNNEST($1::text[], $2::text[]) AS v(field, marker)
                 ON e.field = v.field AND e.marker = v.marker",
            &params,
        )
    );
    locked(lock?)?;
    let rows = lookup?;
    if rows.is_empty() {
        return Ok(Erased::default());
    }
    let by_marker: HashMap<(&str, &str), &MarkedValue> =
        values.iter().map(|v| ((v.field.as_str(), v.marker.as_str()), v)).collect();
    let mut erased = HashMap::with_capacity(rows.len());
    for row in rows {
        let (field, marker, token): (&str, &str, &str) = (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
        // The table's CHECK keeps tokens in a mask's shape.
        if let (Some(value), Some(token)) = (by_marker.get(&(field, marker)), BlindIndex::parse(token)) {
            erased.insert((value.field, value.mask.clone()), token);
        }
    }
    Ok(Erased(erased))
}
