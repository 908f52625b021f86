//! The schema's own rules, tried as a writer bypassing the function would: every string the
//! vault's blind-index rule was written for (`^[0-9a-f]{64}$`) is accepted, nothing else.

use testkit::*;

#[tokio::test]
async fn the_vault_accepts_exactly_64_lowercase_hex_characters_as_a_blind_index() {
    let db = TestDb::new().await;
    let client = db.connect().await;
    let hex = "0123456789abcdef".repeat(4);
    let candidates = [
        hex.clone(),
        "f".repeat(64),
        hex[..63].to_owned(),
        format!("{hex}0"),
        hex.to_uppercase(),
        format!("{}G", &hex[..63]),
        format!("{} ", &hex[..63]),
        format!(" {}", &hex[..63]),
        format!("{}\n", &hex[..63]),
        // 64 bytes, 63 characters: a two-byte character must not pass the length rule.
        format!("{}é", &hex[..62]),
        format!("{}０", &hex[..61]),
        String::new(),
        "-".repeat(64),
    ];
    let mut accepted = 0;
    for (n, candidate) in candidates.iter().enumerate() {
        let meant: bool =
            client.query_one("SELECT $1::text ~ '^[0-9a-f]{64}$'", &[candidate]).await.expect("regex").get(0);
        let inserted = client
            .execute(
                "INSERT INTO pii_vault (field, blind_index, key_version, nonce, ciphertext)
                 VALUES ('ip', $1, 1, '\\x000000000000000000000000', '\\x00')",
                &[candidate],
            )
            .await;
        match &inserted {
            Ok(_) => accepted += 1,
            // Refused by the rule, or by varchar(64) before it.
            Err(error) => {
                let db = error.as_db_error().expect("a database error");
                assert!(
                    db.constraint() == Some("pii_vault_blind_index_check")
                        || db.code() == &tokio_postgres::error::SqlState::STRING_DATA_RIGHT_TRUNCATION,
                    "candidate {n}: {error}"
                );
            }
        }
        assert_eq!(inserted.is_ok(), meant, "candidate {n}");
    }
    assert_eq!(accepted, 2);
    // And the rule in place is V4's, without the regex's bounded repetition, validated (V5).
    let row = client
        .query_one(
            "SELECT pg_get_constraintdef(oid), convalidated FROM pg_constraint
              WHERE conname = 'pii_vault_blind_index_check'",
            &[],
        )
        .await
        .expect("constraint");
    let (definition, validated): (String, bool) = (row.get(0), row.get(1));
    assert!(definition.contains("octet_length") && !definition.contains("{64}"), "{definition}");
    assert!(validated);
}
