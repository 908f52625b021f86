//! Parsing one SQS message body into a [`LoginEvent`] that can only hold valid values
//! ("parse, don't validate"). Every rejection is a [`RejectReason`] with a stable code.
//!
//! No error or `Debug` output here ever contains a field's value: bodies carry PII.

use std::fmt;
use std::net::IpAddr;

use super::app_version::AppVersion;
use super::body::RawBody;
use super::reject::{Field, RejectReason};
use super::text::is_invisible;

/// Non-empty text without control or invisible characters, at most the field's column width.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnText(String);

impl ColumnText {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The client address, kept canonical: IPv4-mapped IPv6 folds to IPv4 and IPv6 prints in
/// RFC 5952 form, so every spelling of one address masks the same.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(IpAddr);

impl ClientIp {
    /// Parses and canonicalizes an address as the function does (for staff tools too).
    pub fn parse(text: &str) -> Result<ClientIp, RejectReason> {
        let text = column_text(text.trim(), Field::Ip)?;
        // std's parser refuses leading-zero octets ("010.0.0.1" is octal to some tools)
        // and zone ids, so what it accepts has exactly one meaning.
        let addr: IpAddr = text.as_str().parse().map_err(|_| RejectReason::InvalidIp)?;
        Ok(ClientIp(addr.to_canonical()))
    }

    pub fn addr(&self) -> IpAddr {
        self.0
    }

    /// The normalized text that is blind-indexed and vaulted.
    pub fn canonical(&self) -> String {
        self.0.to_string()
    }
}

impl fmt::Debug for ClientIp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientIp(<redacted>)")
    }
}

/// The device identifier, trimmed of surrounding white space.
#[derive(Clone, PartialEq, Eq)]
pub struct DeviceId(String);

impl DeviceId {
    /// Trims and checks a device id as the function does (for staff tools too).
    pub fn parse(text: &str) -> Result<DeviceId, RejectReason> {
        column_text(text.trim(), Field::DeviceId).map(|text| DeviceId(text.0))
    }

    /// The normalized text that is blind-indexed and vaulted.
    pub fn canonical(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DeviceId(<redacted>)")
    }
}

/// The PII a body holds where it can be read, as the function would read it: for a
/// rejected body, so that its quarantined copy is found by the values' blind indexes
/// (`forget` reaches it). Every readable value counts: a field given twice gives both, and
/// a body cut short or followed by stray bytes gives what its object holds.
#[derive(Debug, Default)]
pub struct ReadablePii {
    pub ips: Vec<ClientIp>,
    pub device_ids: Vec<DeviceId>,
}

impl ReadablePii {
    pub fn of(body: &str) -> ReadablePii {
        let mut pii = ReadablePii::default();
        for (field, text) in super::body::readable_fields(body) {
            match field {
                Field::Ip => pii.ips.extend(ClientIp::parse(&text)),
                Field::DeviceId => pii.device_ids.extend(DeviceId::parse(&text)),
                _ => {}
            }
        }
        pii
    }
}

/// A login as the app sent it, every value checked to fit its column: the details that
/// `user_logins` keeps as they are, and the PII, which it keeps only masked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginEvent {
    details: LoginDetails,
    ip: ClientIp,
    device_id: DeviceId,
    unknown_fields: usize,
}

/// The fields of a login that are no PII: stored in `user_logins` as sent (the table
/// description in `store::table` reads them from here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginDetails {
    user_id: ColumnText,
    device_type: ColumnText,
    locale: Option<ColumnText>,
    app_version: AppVersion,
}

impl LoginEvent {
    /// Parses a message body. Unknown extra fields are ignored and counted; a known field
    /// given twice is refused (`duplicate_field`), whichever value would have won.
    pub fn parse(body: &str) -> Result<LoginEvent, RejectReason> {
        let mut raw = RawBody::parse(body)?;
        // Checked in field order so the reason is deterministic for a given body.
        let user_id = column_text(&raw.text(Field::UserId)?, Field::UserId)?;
        let app_version_text = column_text(&raw.text(Field::AppVersion)?, Field::AppVersion)?;
        let app_version = AppVersion::parse(app_version_text.as_str())?;
        let device_type = column_text(&raw.text(Field::DeviceType)?, Field::DeviceType)?;
        let ip = ClientIp::parse(&raw.text(Field::Ip)?)?;
        let locale =
            raw.nullable_text(Field::Locale)?.map(|text| column_text(&text, Field::Locale)).transpose()?;
        let device_id = DeviceId::parse(&raw.text(Field::DeviceId)?)?;
        let unknown_fields = raw.unknown_fields;

        let details = LoginDetails { user_id, device_type, locale, app_version };
        Ok(LoginEvent { details, ip, device_id, unknown_fields })
    }

    /// The details, the address and the device id, apart: the PII goes to be masked and
    /// sealed, the details into the row as they are.
    pub fn into_parts(self) -> (LoginDetails, ClientIp, DeviceId) {
        (self.details, self.ip, self.device_id)
    }

    pub fn details(&self) -> &LoginDetails {
        &self.details
    }
    pub fn user_id(&self) -> &str {
        self.details.user_id()
    }
    pub fn device_type(&self) -> &str {
        self.details.device_type()
    }
    pub fn locale(&self) -> Option<&str> {
        self.details.locale()
    }
    pub fn app_version(&self) -> &AppVersion {
        self.details.app_version()
    }
    pub fn ip(&self) -> ClientIp {
        self.ip
    }
    pub fn device_id(&self) -> &DeviceId {
        &self.device_id
    }
    pub fn unknown_fields(&self) -> usize {
        self.unknown_fields
    }
}

impl LoginDetails {
    pub fn user_id(&self) -> &str {
        self.user_id.as_str()
    }
    pub fn device_type(&self) -> &str {
        self.device_type.as_str()
    }
    pub fn locale(&self) -> Option<&str> {
        self.locale.as_ref().map(ColumnText::as_str)
    }
    pub fn app_version(&self) -> &AppVersion {
        &self.app_version
    }
}

fn column_text(text: &str, field: Field) -> Result<ColumnText, RejectReason> {
    if text.trim().is_empty() {
        return Err(RejectReason::EmptyField(field));
    }
    // Nearly every value is ASCII: no ASCII character is invisible, and each is one char.
    let chars = if text.is_ascii() {
        if text.bytes().any(|b| b.is_ascii_control()) {
            return Err(RejectReason::ControlCharacter(field));
        }
        text.len()
    } else {
        if text.chars().any(char::is_control) {
            return Err(RejectReason::ControlCharacter(field));
        }
        // Zero-width, BOM, soft hyphen, bidi controls…: two spellings that look the same
        // would get different masks (missed duplicates), and analysts would read what is
        // not there.
        if text.chars().any(is_invisible) {
            return Err(RejectReason::InvisibleCharacter(field));
        }
        text.chars().count()
    };
    if chars > field.max_chars() {
        return Err(RejectReason::TooLong(field));
    }
    Ok(ColumnText(text.to_owned()))
}

#[cfg(test)]
mod tests {
    use serde_json::{Map, Value};

    use super::*;

    fn body(overrides: &[(&str, Value)]) -> String {
        let mut object = serde_json::json!({
            "user_id": "424cdd21-063a-43a7-b91b-7ca1a833afae",
            "app_version": "2.3.0",
            "device_type": "android",
            "ip": "10.1.2.3",
            "locale": "RU",
            "device_id": "111-22-3333"
        });
        for (key, value) in overrides {
            object[*key] = value.clone();
        }
        object.to_string()
    }

    fn reject(overrides: &[(&str, Value)]) -> RejectReason {
        LoginEvent::parse(&body(overrides)).expect_err("body should be rejected")
    }

    #[test]
    fn parses_a_valid_login() {
        let login = LoginEvent::parse(&body(&[])).expect("valid");
        assert_eq!(login.user_id(), "424cdd21-063a-43a7-b91b-7ca1a833afae");
        assert_eq!(login.device_type(), "android");
        assert_eq!(login.locale(), Some("RU"));
        assert_eq!(login.app_version().encoded(), 2_003_000);
        assert_eq!(login.app_version().raw(), "2.3.0");
        assert_eq!(login.ip().canonical(), "10.1.2.3");
        assert_eq!(login.device_id().canonical(), "111-22-3333");
        assert_eq!(login.unknown_fields(), 0);
    }

    #[test]
    fn null_locale_is_accepted_and_unknown_fields_are_counted() {
        let login = LoginEvent::parse(&body(&[
            ("locale", Value::Null),
            ("extra", Value::from(1)),
            ("more", Value::from("x")),
        ]))
        .expect("valid");
        assert_eq!(login.locale(), None);
        assert_eq!(login.unknown_fields(), 2);
    }

    #[test]
    fn the_exercise_wrong_message_type_is_a_missing_field() {
        let reason =
            LoginEvent::parse(r#"{"foo": "oops_wrong_msg_type", "bar": "123"}"#).expect_err("not a login");
        assert_eq!(reason, RejectReason::MissingField(Field::UserId));
        assert_eq!(reason.code(), "missing_field");
    }

    #[test]
    fn non_json_and_non_objects_are_rejected() {
        assert_eq!(LoginEvent::parse("not json"), Err(RejectReason::NotJson));
        assert_eq!(LoginEvent::parse(""), Err(RejectReason::NotJson));
        assert_eq!(LoginEvent::parse("[1,2]"), Err(RejectReason::NotAnObject));
        assert_eq!(LoginEvent::parse("\"text\""), Err(RejectReason::NotAnObject));
    }

    #[test]
    fn each_required_field_must_be_present_non_null_and_a_string() {
        for field in Field::ALL {
            let mut object: Map<String, Value> = serde_json::from_str(&body(&[])).expect("json");
            object.remove(field.name());
            let missing = LoginEvent::parse(&Value::Object(object).to_string());
            assert_eq!(missing, Err(RejectReason::MissingField(field)));

            let wrong = reject(&[(field.name(), Value::from(42))]);
            assert_eq!(wrong, RejectReason::WrongType(field));

            if field != Field::Locale {
                assert_eq!(reject(&[(field.name(), Value::Null)]), RejectReason::NullField(field));
            }
        }
    }

    #[test]
    fn values_must_fit_their_columns() {
        let reason = reject(&[("user_id", Value::from("u".repeat(129)))]);
        assert_eq!(reason, RejectReason::TooLong(Field::UserId));
        // 128 multi-byte characters fit varchar(128), which counts characters.
        let login = LoginEvent::parse(&body(&[("user_id", Value::from("é".repeat(128)))]));
        assert!(login.is_ok());
        assert_eq!(
            reject(&[("device_type", Value::from("x".repeat(33)))]),
            RejectReason::TooLong(Field::DeviceType)
        );
        assert_eq!(reject(&[("locale", Value::from("x".repeat(33)))]), RejectReason::TooLong(Field::Locale));
        assert_eq!(
            reject(&[("device_id", Value::from("x".repeat(257)))]),
            RejectReason::TooLong(Field::DeviceId)
        );
    }

    #[test]
    fn empty_and_control_characters_are_rejected() {
        assert_eq!(reject(&[("device_type", Value::from(""))]), RejectReason::EmptyField(Field::DeviceType));
        assert_eq!(reject(&[("device_id", Value::from("   "))]), RejectReason::EmptyField(Field::DeviceId));
        assert_eq!(reject(&[("locale", Value::from(""))]), RejectReason::EmptyField(Field::Locale));
        assert_eq!(
            reject(&[("user_id", Value::from("abc\u{0}def"))]),
            RejectReason::ControlCharacter(Field::UserId)
        );
        assert_eq!(
            reject(&[("device_id", Value::from("a\nb"))]),
            RejectReason::ControlCharacter(Field::DeviceId)
        );
    }

    #[test]
    fn ips_are_validated_and_canonicalized() {
        assert_eq!(reject(&[("ip", Value::from("999.1.1.1"))]), RejectReason::InvalidIp);
        assert_eq!(reject(&[("ip", Value::from("010.1.1.1"))]), RejectReason::InvalidIp);
        assert_eq!(reject(&[("ip", Value::from("fe80::1%eth0"))]), RejectReason::InvalidIp);
        assert_eq!(reject(&[("ip", Value::from("example.com"))]), RejectReason::InvalidIp);

        let canonical = |ip: &str| {
            LoginEvent::parse(&body(&[("ip", Value::from(ip))])).expect("valid ip").ip().canonical()
        };
        assert_eq!(canonical(" 10.1.2.3 "), "10.1.2.3");
        assert_eq!(canonical("::ffff:10.1.2.3"), "10.1.2.3");
        assert_eq!(canonical("2001:DB8:0:0:0:0:0:1"), "2001:db8::1");
        assert_eq!(canonical("2001:db8::0:1"), "2001:db8::1");
        // Multicast and reserved addresses are valid addresses.
        assert_eq!(canonical("224.0.0.1"), "224.0.0.1");
        assert_eq!(canonical("255.255.255.255"), "255.255.255.255");
    }

    #[test]
    fn device_id_is_trimmed() {
        let login = LoginEvent::parse(&body(&[("device_id", Value::from(" 111-22-3333\t"))])).expect("valid");
        assert_eq!(login.device_id().canonical(), "111-22-3333");
        // Inside the value a control character is still refused.
        assert_eq!(
            reject(&[("device_id", Value::from("111\t22"))]),
            RejectReason::ControlCharacter(Field::DeviceId)
        );
    }

    #[test]
    fn app_version_problems_have_their_own_codes() {
        assert_eq!(reject(&[("app_version", Value::from("2.x"))]).code(), "invalid_app_version");
        assert_eq!(reject(&[("app_version", Value::from("1.1000"))]).code(), "app_version_out_of_range");
    }

    #[test]
    fn debug_output_never_shows_pii() {
        let login = LoginEvent::parse(&body(&[])).expect("valid");
        let debug = format!("{login:?}");
        assert!(!debug.contains("10.1.2.3"), "{debug}");
        assert!(!debug.contains("111-22-3333"), "{debug}");
    }
}
