//! Reading a message body as JSON, one pass, no intermediate tree: the known fields ([`Field::ALL`])
//! are picked out as they stream by (strings borrowed from the body where JSON allows),
//! unknown fields are skipped and counted, and a field given twice is noticed. Two JSON
//! parsers disagree on which of two duplicate keys wins; we take neither.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use zeroize::Zeroizing;

use super::reject::{Field, RejectReason};

/// A known field's JSON value, as far as validation cares.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Slot<'a> {
    Null,
    Text(Cow<'a, str>),
    /// A number, boolean, array or object.
    NotText,
}

/// The top-level object of a body.
#[derive(Debug, Default)]
pub(super) struct RawBody<'a> {
    slots: [Option<Slot<'a>>; Field::ALL.len()],
    duplicate: Option<Field>,
    pub(super) unknown_fields: usize,
}

impl<'a> RawBody<'a> {
    /// Parses `body`: not JSON, not an object, or a known field given twice is rejected.
    pub(super) fn parse(body: &'a str) -> Result<RawBody<'a>, RejectReason> {
        // serde_json bounds nesting (128 levels), so hostile depth is an error, not a stack
        // overflow; trailing characters after the object are an error too.
        match serde_json::from_str::<TopLevel<'a>>(body) {
            Err(_) => Err(RejectReason::NotJson),
            Ok(TopLevel::NotAnObject) => Err(RejectReason::NotAnObject),
            Ok(TopLevel::Object(raw)) => match raw.duplicate {
                Some(field) => Err(RejectReason::DuplicateField(field)),
                None => Ok(raw),
            },
        }
    }

    /// The field's raw value, for the tests of the reader.
    #[cfg(test)]
    fn take(&mut self, field: Field) -> Result<Slot<'a>, RejectReason> {
        self.slots[field as usize].take().ok_or(RejectReason::MissingField(field))
    }

    /// A required string field.
    pub(super) fn text(&mut self, field: Field) -> Result<Cow<'a, str>, RejectReason> {
        self.nullable_text(field)?.ok_or(RejectReason::NullField(field))
    }

    /// A string field that may be null, or absent altogether: for a field that producers
    /// added later, so older apps do not send it (see docs/extending.md).
    pub(super) fn optional_text(&mut self, field: Field) -> Result<Option<Cow<'a, str>>, RejectReason> {
        match self.slots[field as usize].take() {
            None | Some(Slot::Null) => Ok(None),
            Some(Slot::Text(text)) => Ok(Some(text)),
            Some(Slot::NotText) => Err(RejectReason::WrongType(field)),
        }
    }

    /// A string field that may be null, but must be there: a missing key is an error,
    /// because every producer of this queue sends the field.
    pub(super) fn nullable_text(&mut self, field: Field) -> Result<Option<Cow<'a, str>>, RejectReason> {
        if self.slots[field as usize].is_none() {
            return Err(RejectReason::MissingField(field));
        }
        self.optional_text(field)
    }
}

/// Every string a body gives a known field, in order, a field given twice included, read
/// as far as the body is a JSON object: what came before a syntax error (a body cut short)
/// is kept, and what follows the object (stray bytes) is ignored. For reading what a
/// rejected body holds, never for accepting it. The values are PII: wiped on drop.
pub(super) fn readable_fields(body: &str) -> Vec<(Field, Zeroizing<String>)> {
    let mut found = Vec::new();
    let mut deserializer = serde_json::Deserializer::from_str(body);
    // The error (if any) only says where reading stopped; what was read is in `found`.
    let _ = de::DeserializeSeed::deserialize(Collect(&mut found), &mut deserializer);
    found
}

/// A top-level object's known string fields, pushed as they stream by.
struct Collect<'v>(&'v mut Vec<(Field, Zeroizing<String>)>);

impl<'de> de::DeserializeSeed<'de> for Collect<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Collect<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<(), M::Error> {
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::Known(field) => {
                    if let Slot::Text(text) = map.next_value::<Slot<'de>>()? {
                        self.0.push((field, Zeroizing::new(text.into_owned())));
                    }
                }
                Key::Unknown => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }

    fn visit_seq<S: SeqAccess<'de>>(self, _: S) -> Result<(), S::Error> {
        Ok(())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
}

enum TopLevel<'a> {
    Object(RawBody<'a>),
    NotAnObject,
}

impl<'de> Deserialize<'de> for TopLevel<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(TopLevelVisitor)
    }
}

struct TopLevelVisitor;

impl<'de> Visitor<'de> for TopLevelVisitor {
    type Value = TopLevel<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
        let mut raw = RawBody::default();
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::Known(field) => {
                    let value = map.next_value::<Slot<'de>>()?;
                    let slot = &mut raw.slots[field as usize];
                    if slot.is_some() {
                        raw.duplicate.get_or_insert(field);
                    }
                    *slot = Some(value);
                }
                Key::Unknown => {
                    map.next_value::<IgnoredAny>()?;
                    raw.unknown_fields += 1;
                }
            }
        }
        Ok(TopLevel::Object(raw))
    }

    fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<Self::Value, S::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(TopLevel::NotAnObject)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(TopLevel::NotAnObject)
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(TopLevel::NotAnObject)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(TopLevel::NotAnObject)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(TopLevel::NotAnObject)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(TopLevel::NotAnObject)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(TopLevel::NotAnObject)
    }
}

/// An object key: one of the known field names (after JSON unescaping), or another.
enum Key {
    Known(Field),
    Unknown,
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_str<E: de::Error>(self, key: &str) -> Result<Key, E> {
                Ok(Field::ALL.into_iter().find(|f| f.name() == key).map_or(Key::Unknown, Key::Known))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

impl<'de> Deserialize<'de> for Slot<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(SlotVisitor)
    }
}

struct SlotVisitor;

impl<'de> Visitor<'de> for SlotVisitor {
    type Value = Slot<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_borrowed_str<E: de::Error>(self, text: &'de str) -> Result<Self::Value, E> {
        Ok(Slot::Text(Cow::Borrowed(text)))
    }
    /// A string with escapes: unescaped into a buffer of its own.
    fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
        Ok(Slot::Text(Cow::Owned(text.to_owned())))
    }
    fn visit_string<E: de::Error>(self, text: String) -> Result<Self::Value, E> {
        Ok(Slot::Text(Cow::Owned(text)))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Slot::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Slot::Null)
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Slot::NotText)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Slot::NotText)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Slot::NotText)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Slot::NotText)
    }
    fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<Self::Value, S::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Slot::NotText)
    }
    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Slot::NotText)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_without_escapes_are_borrowed_and_escapes_are_decoded() {
        let mut raw = RawBody::parse(r#"{"ip": "10.0.0.1", "device_id": "a\u0062c", "x": [1, {"y": 2}]}"#)
            .expect("object");
        assert!(matches!(raw.take(Field::Ip), Ok(Slot::Text(Cow::Borrowed("10.0.0.1")))));
        assert_eq!(raw.take(Field::DeviceId), Ok(Slot::Text(Cow::Owned("abc".into()))));
        assert_eq!(raw.take(Field::Locale), Err(RejectReason::MissingField(Field::Locale)));
        assert_eq!(raw.unknown_fields, 1);
    }

    #[test]
    fn a_known_field_twice_is_refused_even_when_spelled_with_escapes() {
        let error = RawBody::parse(r#"{"ip": "10.0.0.1", "i\u0070": "10.0.0.2"}"#).expect_err("dup");
        assert_eq!(error, RejectReason::DuplicateField(Field::Ip));
        // Unknown keys may repeat: they are ignored anyway.
        assert!(RawBody::parse(r#"{"x": 1, "x": 2}"#).is_ok());
    }

    #[test]
    fn an_optional_field_may_be_absent_or_null_but_not_of_another_type() {
        let mut absent = RawBody::parse(r#"{"user_id": "u"}"#).expect("object");
        assert_eq!(absent.optional_text(Field::Locale), Ok(None));
        let mut null = RawBody::parse(r#"{"locale": null}"#).expect("object");
        assert_eq!(null.optional_text(Field::Locale), Ok(None));
        let mut text = RawBody::parse(r#"{"locale": "RU"}"#).expect("object");
        assert_eq!(text.optional_text(Field::Locale), Ok(Some(Cow::Borrowed("RU"))));
        let mut number = RawBody::parse(r#"{"locale": 7}"#).expect("object");
        assert_eq!(number.optional_text(Field::Locale), Err(RejectReason::WrongType(Field::Locale)));
        // A nullable field, unlike an optional one, must be sent.
        let mut absent = RawBody::parse(r#"{"user_id": "u"}"#).expect("object");
        assert_eq!(absent.nullable_text(Field::Locale), Err(RejectReason::MissingField(Field::Locale)));
    }

    #[test]
    fn value_kinds_are_told_apart() {
        let mut raw =
            RawBody::parse(r#"{"ip": null, "locale": 1.5, "user_id": {"a": []}, "device_id": true}"#)
                .expect("object");
        assert_eq!(raw.take(Field::Ip), Ok(Slot::Null));
        assert_eq!(raw.take(Field::Locale), Ok(Slot::NotText));
        assert_eq!(raw.take(Field::UserId), Ok(Slot::NotText));
        assert_eq!(raw.take(Field::DeviceId), Ok(Slot::NotText));
    }

    #[test]
    fn not_json_and_not_objects() {
        for body in ["", " ", "{", "{}}", "{\"a\":1} x", "nul", "\"\\ud800\""] {
            assert_eq!(RawBody::parse(body).err(), Some(RejectReason::NotJson), "{body:?}");
        }
        for body in ["[]", "[1,[2]]", "\"s\"", "1", "-1.5e3", "true", "null"] {
            assert_eq!(RawBody::parse(body).err(), Some(RejectReason::NotAnObject), "{body:?}");
        }
    }

    #[test]
    fn deep_nesting_is_skipped_without_recursion() {
        // serde_json skips ignored values iteratively: no stack overflow at any depth.
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert_eq!(RawBody::parse(&deep(100_000)).err(), Some(RejectReason::NotAnObject));
        let in_unknown = format!(r#"{{"extra": {}, "ip": "10.0.0.1"}}"#, deep(100_000));
        assert_eq!(RawBody::parse(&in_unknown).map(|r| r.unknown_fields), Ok(1));
        let in_known = format!(r#"{{"ip": {}}}"#, deep(100_000));
        let mut raw = RawBody::parse(&in_known).expect("object");
        assert_eq!(raw.take(Field::Ip), Ok(Slot::NotText));
        // Unbalanced, it is not JSON.
        assert_eq!(RawBody::parse(&"[".repeat(100_000)).err(), Some(RejectReason::NotJson));
    }
}
