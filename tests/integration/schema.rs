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
                "INSERT INTO vault.pii_vault (field, blind_index, key_version, nonce, ciphertext)
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

/// How `description` and the table `name` in the connected database disagree: a described
/// column missing or of another type or width, an optional column the table would refuse
/// NULL in, or a table column the description neither writes nor leaves to the table.
async fn disagreements<R>(
    client: &tokio_postgres::Client,
    description: &login_etl_core::store::table::Table<R>,
) -> Vec<String> {
    // The tables are named with their schema (sql/V12): compare the table, not the view
    // of the same name in public.
    let (schema, table) = description.name.split_once('.').expect("a schema-qualified name");
    let rows = client
        .query(
            "SELECT column_name::text, data_type::text, character_maximum_length, is_nullable = 'YES',
                    column_default IS NOT NULL
               FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2",
            &[&schema, &table],
        )
        .await
        .expect("information_schema");
    let mut found = Vec::new();
    for column in description.columns {
        let Some(row) = rows.iter().find(|r| r.get::<_, String>(0) == column.name) else {
            found.push(format!("{} is described but not in the table", column.name));
            continue;
        };
        let (data_type, length, nullable) =
            (row.get::<_, String>(1), row.get::<_, Option<i32>>(2), row.get::<_, bool>(3));
        if data_type != column.sql_type.information_schema_name()
            || length.map(|n| n as u32) != column.sql_type.max_length()
        {
            found.push(format!(
                "{} is {data_type}({length:?}), described as {:?}",
                column.name, column.sql_type
            ));
        }
        if column.nullable() && !nullable {
            found.push(format!("{} may be NULL in the description but not in the table", column.name));
        }
    }
    for row in &rows {
        let name: String = row.get(0);
        let described = description.column_names().any(|c| c == name);
        // Left to the table: it has a default, or NULL until another operation sets it.
        let own = description.filled_by_table.contains(&name.as_str())
            && (row.get::<_, bool>(4) || row.get::<_, bool>(3));
        if !described && !own {
            found.push(format!("{name} is in the table but neither described nor filled by the table"));
        }
    }
    found
}

#[tokio::test]
async fn the_quarantine_description_matches_the_migrated_table() {
    use login_etl_core::store::quarantine::LOGIN_QUARANTINE;

    let db = TestDb::new().await;
    let client = db.connect().await;
    assert_eq!(disagreements(&client, &LOGIN_QUARANTINE).await, Vec::<String>::new());
    assert_eq!(
        disagreements(&client, &login_etl_core::store::quarantine::LOGIN_QUARANTINE_MASKS).await,
        Vec::<String>::new()
    );
    client
        .batch_execute("ALTER TABLE login_data.login_quarantine ALTER COLUMN field TYPE varchar(16)")
        .await
        .expect("drift");
    assert_eq!(
        disagreements(&client, &LOGIN_QUARANTINE).await,
        ["field is character varying(Some(16)), described as Varchar(32)"]
    );
}

#[tokio::test]
async fn the_user_logins_description_matches_the_migrated_table_and_every_difference_is_caught() {
    use login_etl_core::store::table::USER_LOGINS;

    let db = TestDb::new().await;
    let client = db.connect().await;
    assert_eq!(disagreements(&client, &USER_LOGINS).await, Vec::<String>::new());

    // The same check on the table changed in each way a migration might drift from it.
    client
        .batch_execute(
            "DROP VIEW public.user_logins;
             ALTER TABLE login_data.user_logins ALTER COLUMN device_type TYPE varchar(64);
             ALTER TABLE login_data.user_logins ALTER COLUMN app_version TYPE bigint;
             ALTER TABLE login_data.user_logins ALTER COLUMN locale SET NOT NULL;
             ALTER TABLE login_data.user_logins DROP COLUMN index_key_version;
             ALTER TABLE login_data.user_logins ADD COLUMN not_described varchar(32);
             ALTER TABLE login_data.user_logins ALTER COLUMN loaded_at DROP DEFAULT;",
        )
        .await
        .expect("drift");
    let mut found = disagreements(&client, &USER_LOGINS).await;
    found.sort();
    assert_eq!(
        found,
        [
            "app_version is bigint(None), described as Integer",
            "device_type is character varying(Some(64)), described as Varchar(32)",
            "index_key_version is described but not in the table",
            "loaded_at is in the table but neither described nor filled by the table",
            "locale may be NULL in the description but not in the table",
            "not_described is in the table but neither described nor filled by the table",
        ]
    );
}
