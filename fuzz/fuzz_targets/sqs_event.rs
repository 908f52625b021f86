//! `handler::prepare` on any SQS event serde can read from arbitrary bytes, with a fixed
//! keyring. It must never panic or fail, must account for every record exactly once,
//! quarantine exactly the rejected ones (each body sealed to its id, opening to what was
//! sent), report as item failures exactly the ids no column can hold, and vault each
//! distinct value once such that it opens and re-masks to its row's blind index. Each
//! record's outcome is also recomputed independently (id, SentTimestamp, body,
//! `LoginEvent::parse`) and compared. Rows come in the store's lock order: logins by
//! message id, quarantine rows by (message id, attempt), vault rows by (field, blind
//! index), bytewise. (Replays, which need the replay queue's ARN, are not fuzzed here.)
#![no_main]

use std::collections::{BTreeMap, HashSet};
use std::sync::LazyLock;

use aws_lambda_events::sqs::{SqsEvent, SqsMessage};
use libfuzzer_sys::fuzz_target;
use login_etl::handler::{self, Rejection};
use login_etl_core::crypto::{BlindIndex, BlindIndexer, DataKey, ErasureKey, KeyMaterial, PiiField};
use login_etl_core::event::{ClientIp, DeviceId, LoginEvent, MessageId, ReadablePii, RejectReason};
use login_etl_core::keys::Keyring;

const INDEX_KEY_VERSION: i32 = 1;
const DATA_KEY_VERSION: i32 = 1;

static KEYRING: LazyLock<Keyring> = LazyLock::new(|| Keyring {
    indexer: BlindIndexer::new(&KeyMaterial::from_bytes([1; 32]), &KeyMaterial::from_bytes([2; 32])),
    index_key_version: INDEX_KEY_VERSION,
    data_key: DataKey::new(DATA_KEY_VERSION, &KeyMaterial::from_bytes([3; 32])),
    erasure: ErasureKey::new(&KeyMaterial::from_bytes([4; 32])),
});

/// What the handler should do with one record, computed without the handler.
enum Expected {
    Unidentifiable,
    /// An id no column can hold: an item failure.
    Unstorable(String),
    /// Quarantined, with the body as sent (empty when there was none).
    Rejected(Rejection, String),
    Accepted { message_id: String, millis: i64, login: LoginEvent },
}

fuzz_target!(|data: &[u8]| {
    let Ok(event) = serde_json::from_slice::<SqsEvent>(data) else {
        return;
    };
    let keyring = &*KEYRING;
    let expected: Vec<Expected> = event.records.iter().map(expect).collect();
    let received = event.records.len();

    let batch = match handler::prepare(keyring, event, None, &login_etl_core::store::PartitionMap::everything()) {
        Ok(batch) => batch,
        Err(error) => panic!("prepare failed on a parseable event: {error}"),
    };
    let stats = &batch.stats;

    // Every record is accounted for exactly once.
    assert_eq!(stats.received, received, "received");
    assert_eq!(
        stats.received,
        batch.rows.logins().len() + stats.rejections.len() + stats.unidentifiable + stats.unstorable_ids,
        "received != logins + rejections + unidentifiable + unstorable"
    );
    assert_eq!(stats.accepted, batch.rows.logins().len(), "accepted != logins");

    // batchItemFailures: exactly the unstorable ids, in order, never an empty id.
    let failures: Vec<&str> =
        batch.response.batch_item_failures.iter().map(|f| f.item_identifier.as_str()).collect();
    let unstorable: Vec<&str> = expected
        .iter()
        .filter_map(|e| if let Expected::Unstorable(id) = e { Some(id.as_str()) } else { None })
        .collect();
    assert!(failures.iter().all(|id| !id.is_empty()), "empty id in batchItemFailures");
    assert_eq!(failures, unstorable, "batchItemFailures != unstorable ids");
    assert_eq!(stats.unstorable_ids, unstorable.len(), "unstorable_ids");
    let mut by_reason: BTreeMap<&'static str, usize> = BTreeMap::new();
    for rejection in &stats.rejections {
        assert!(!rejection.reason.code().is_empty(), "empty reject code");
        *by_reason.entry(rejection.reason.code()).or_default() += 1;
    }
    assert_eq!(stats.rejected_by_reason, by_reason, "rejected_by_reason");

    // Each record's outcome, recomputed independently.
    let unidentifiable = expected.iter().filter(|e| matches!(e, Expected::Unidentifiable)).count();
    assert_eq!(stats.unidentifiable, unidentifiable, "unidentifiable");
    let expected_rejections: Vec<(&Rejection, &String)> = expected
        .iter()
        .filter_map(|e| if let Expected::Rejected(r, body) = e { Some((r, body)) } else { None })
        .collect();
    assert_eq!(
        stats.rejections.iter().collect::<Vec<_>>(),
        expected_rejections.iter().map(|(r, _)| *r).collect::<Vec<_>>(),
        "rejections"
    );
    // The quarantine: one row per rejection, in (id, attempt) order, each body sealed to its
    // id and opening to what was sent, with the masks of whatever PII can be read.
    let mut quarantined: Vec<(&Rejection, &String)> = expected_rejections.clone();
    quarantined.sort_by(|a, b| a.0.message_id.as_bytes().cmp(b.0.message_id.as_bytes()));
    assert_eq!(quarantined.len(), batch.rows.quarantine().len(), "quarantine rows");
    for (row, (rejection, body)) in batch.rows.quarantine().iter().zip(&quarantined) {
        assert_eq!(row.message_id.as_str(), rejection.message_id, "quarantine order");
        assert_eq!((row.attempt, row.reason_code), (0, rejection.reason.code()), "quarantine reason");
        let opened = keyring
            .data_key
            .open_body(row.message_id.as_str(), row.attempt, &row.sealed)
            .unwrap_or_else(|error| panic!("quarantined body does not open: {error}"));
        assert_eq!(opened.as_str(), body.as_str(), "quarantined body");
        // Every readable value, each once: recomputed here from ReadablePii.
        let pii = ReadablePii::of(body);
        let mut masks: Vec<(PiiField, BlindIndex)> = pii
            .ips
            .iter()
            .map(|ip| (PiiField::Ip, keyring.indexer.index(PiiField::Ip, &ip.canonical())))
            .chain(pii.device_ids.iter().map(|d| (PiiField::DeviceId, keyring.indexer.index(PiiField::DeviceId, d.canonical()))))
            .collect();
        masks.sort_by(|a, b| (a.0.as_str(), a.1.as_str()).cmp(&(b.0.as_str(), b.1.as_str())));
        masks.dedup();
        assert_eq!(row.masks, masks, "quarantine masks");
    }
    let mut accepted: Vec<(&String, i64, &LoginEvent)> = expected
        .iter()
        .filter_map(|e| match e {
            Expected::Accepted { message_id, millis, login } => Some((message_id, *millis, login)),
            _ => None,
        })
        .collect();
    // Lock order: by message id, bytewise; equal ids keep their batch order.
    accepted.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    assert_eq!(accepted.len(), batch.rows.logins().len(), "number of logins");
    let unknown_fields: usize = accepted.iter().map(|(_, _, login)| login.unknown_fields()).sum();
    assert_eq!(stats.unknown_fields, unknown_fields, "unknown_fields");

    let mut masks: Vec<(PiiField, BlindIndex)> = Vec::new();
    for (row, (message_id, millis, login)) in batch.rows.logins().iter().zip(&accepted) {
        assert!(!row.sqs_message_id.is_empty(), "login row without a message id");
        assert_eq!(&row.sqs_message_id, *message_id, "login order");
        assert_eq!(&row.details, login.details(), "details");
        assert!(row.details.app_version().encoded() >= 0, "negative app_version");
        assert_eq!(row.sent_at.timestamp_millis(), *millis, "sent_at");
        assert_eq!(row.index_key_version, INDEX_KEY_VERSION, "index_key_version");
        let ip_mask = keyring.indexer.index(PiiField::Ip, &login.ip().canonical());
        let device_mask = keyring.indexer.index(PiiField::DeviceId, login.device_id().canonical());
        assert_eq!(row.masked_ip, ip_mask, "masked_ip");
        assert_eq!(row.masked_device_id, device_mask, "masked_device_id");
        for mask in [&row.masked_ip, &row.masked_device_id] {
            assert!(
                mask.as_str().len() == 64
                    && mask.as_str().bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
                "mask is not 64 lowercase hex digits"
            );
        }
        masks.push((PiiField::Ip, ip_mask));
        masks.push((PiiField::DeviceId, device_mask));
    }

    // The vault: one row per distinct (field, blind index) the logins use, each opening
    // to a canonical value that re-masks to the row's index.
    let mut seen = HashSet::new();
    let keys: Vec<(&[u8], &[u8])> = batch
        .rows
        .vault()
        .iter()
        .map(|row| (row.field.as_str().as_bytes(), row.blind_index.as_str().as_bytes()))
        .collect();
    assert!(keys.windows(2).all(|pair| pair[0] < pair[1]), "vault rows not in (field, blind index) order");
    for row in batch.rows.vault() {
        assert!(
            seen.insert((row.field, row.blind_index.clone())),
            "two vault rows share (field, blind_index)"
        );
        assert_eq!(row.sealed.key_version, DATA_KEY_VERSION, "vault key_version");
        let opened = keyring
            .data_key
            .open(row.field, &row.blind_index, &row.sealed)
            .unwrap_or_else(|error| panic!("vault row does not open: {error}"));
        assert_eq!(
            keyring.indexer.index(row.field, &opened),
            row.blind_index,
            "vault value re-masks differently"
        );
        match row.field {
            PiiField::Ip => assert_eq!(
                ClientIp::parse(&opened).map(|ip| ip.canonical()).ok().as_deref(),
                Some(opened.as_str()),
                "vaulted ip is not canonical"
            ),
            PiiField::DeviceId => assert_eq!(
                DeviceId::parse(&opened).ok().as_ref().map(DeviceId::canonical),
                Some(opened.as_str()),
                "vaulted device_id is not canonical"
            ),
        }
    }
    let used: HashSet<(PiiField, BlindIndex)> = masks.into_iter().collect();
    assert_eq!(seen, used, "vault rows != distinct masks of the logins");
});

fn expect(record: &SqsMessage) -> Expected {
    let Some(message_id) = record.message_id.clone().filter(|id| !id.is_empty()) else {
        return Expected::Unidentifiable;
    };
    if MessageId::parse(message_id.clone()).is_err() {
        return Expected::Unstorable(message_id);
    }
    let body = record.body.clone().unwrap_or_default();
    let reject =
        |reason| Expected::Rejected(Rejection { message_id: message_id.clone(), reason }, body.clone());
    let Some(millis) = record.attributes.get("SentTimestamp").and_then(|text| sent_timestamp(text)) else {
        return reject(RejectReason::InvalidSentTimestamp);
    };
    let Some(text) = record.body.as_deref() else {
        return reject(RejectReason::MissingBody);
    };
    if text.trim().is_empty() {
        return reject(RejectReason::EmptyBody);
    }
    match LoginEvent::parse(text) {
        Ok(login) => Expected::Accepted { message_id, millis, login },
        Err(reason) => reject(reason),
    }
}

/// Epoch milliseconds, ASCII digits only, within chrono's range.
fn sent_timestamp(text: &str) -> Option<i64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let millis: i64 = text.parse().ok()?;
    chrono::DateTime::from_timestamp_millis(millis).map(|_| millis)
}
