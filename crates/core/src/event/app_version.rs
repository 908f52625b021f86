//! The order-preserving integer encoding of `app_version` (the exercise's column is
//! `integer`): `major * 1_000_000 + minor * 1_000 + patch`, missing parts 0.
//!
//! Bounds keep the encoding injective and inside `i32`: minor and patch 0..=999,
//! major 0..=2146 (2146_999_999 < i32::MAX). A version outside them is rejected, never
//! clamped. The original text is kept beside it (`app_version_raw`).

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AppVersionError {
    #[error("not 1 to 3 dot-separated decimal numbers")]
    Malformed,
    #[error("a part is too large to encode")]
    OutOfRange,
}

pub const MAX_MAJOR: u32 = 2146;
pub const MAX_MINOR_OR_PATCH: u32 = 999;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppVersion {
    raw: String,
    encoded: i32,
}

impl AppVersion {
    /// Accepts `N`, `N.N` and `N.N.N` (ASCII digits only, surrounding white space ignored).
    pub fn parse(raw: &str) -> Result<AppVersion, AppVersionError> {
        let mut parts = [0u32; 3];
        for (position, part) in raw.trim().split('.').enumerate() {
            let slot = parts.get_mut(position).ok_or(AppVersionError::Malformed)?;
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(AppVersionError::Malformed);
            }
            // More digits than u32 holds is simply out of range.
            *slot = part.parse().map_err(|_| AppVersionError::OutOfRange)?;
        }
        let [major, minor, patch] = parts;
        if major > MAX_MAJOR || minor > MAX_MINOR_OR_PATCH || patch > MAX_MINOR_OR_PATCH {
            return Err(AppVersionError::OutOfRange);
        }
        let encoded = major * 1_000_000 + minor * 1_000 + patch;
        Ok(AppVersion {
            raw: raw.to_owned(),
            encoded: i32::try_from(encoded).map_err(|_| AppVersionError::OutOfRange)?,
        })
    }

    pub fn raw(&self) -> &str {
        &self.raw
    }

    pub fn encoded(&self) -> i32 {
        self.encoded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(raw: &str) -> Result<i32, AppVersionError> {
        AppVersion::parse(raw).map(|v| v.encoded())
    }

    #[test]
    fn encodes_the_three_shapes_of_the_sample_data() {
        assert_eq!(encode("2.3.0"), Ok(2_003_000));
        assert_eq!(encode("0.96"), Ok(96_000));
        assert_eq!(encode("3.7"), Ok(3_007_000));
        assert_eq!(encode("4"), Ok(4_000_000));
        assert_eq!(encode(" 1.2.3 "), Ok(1_002_003));
    }

    #[test]
    fn encoding_preserves_version_order() {
        let ordered = ["0.0.1", "0.9", "0.9.9", "0.10", "0.96", "1", "1.0.1", "1.2", "2.3.0", "10.0.0"];
        let encoded: Vec<i32> = ordered.iter().map(|v| encode(v).expect("valid")).collect();
        assert!(encoded.windows(2).all(|w| w[0] < w[1]), "{encoded:?}");
    }

    #[test]
    fn bounds_are_enforced_not_clamped() {
        assert_eq!(encode("2146.999.999"), Ok(2_146_999_999));
        assert_eq!(encode("2147"), Err(AppVersionError::OutOfRange));
        assert_eq!(encode("1.1000"), Err(AppVersionError::OutOfRange));
        assert_eq!(encode("1.0.1000"), Err(AppVersionError::OutOfRange));
        assert_eq!(encode("99999999999999999999"), Err(AppVersionError::OutOfRange));
    }

    #[test]
    fn malformed_versions_are_rejected() {
        for raw in ["", ".", "1.", ".1", "1..2", "1.2.3.4", "v1.2", "1.2-beta", "-1", "+1", "1,2", "１.2"] {
            assert_eq!(encode(raw), Err(AppVersionError::Malformed), "{raw:?}");
        }
    }

    #[test]
    fn raw_text_is_kept() {
        let version = AppVersion::parse("0.96").expect("valid");
        assert_eq!(version.raw(), "0.96");
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        fn part(max: u32) -> impl Strategy<Value = u32> {
            prop_oneof![0..=9u32, 0..=max, Just(max)]
        }

        /// Any accepted version, in one of its spellings (`N`, `N.N`, `N.N.N`, zero-padded).
        fn version() -> impl Strategy<Value = ((u32, u32, u32), String)> {
            (part(MAX_MAJOR), part(MAX_MINOR_OR_PATCH), part(MAX_MINOR_OR_PATCH), 0..3usize, 0..3usize)
                .prop_map(|(major, minor, patch, shape, pad)| {
                    let (minor, patch) = match shape {
                        0 => (0, 0),
                        1 => (minor, 0),
                        _ => (minor, patch),
                    };
                    let padded = |n: u32| format!("{n:0pad$}", pad = pad + 1);
                    let text = match shape {
                        0 => padded(major),
                        1 => format!("{}.{}", padded(major), padded(minor)),
                        _ => format!("{}.{}.{}", padded(major), padded(minor), padded(patch)),
                    };
                    ((major, minor, patch), text)
                })
        }

        proptest! {
            #[test]
            fn the_encoding_preserves_order_and_is_injective(
                (a, a_text) in version(),
                (b, b_text) in version(),
            ) {
                let ea = AppVersion::parse(&a_text).expect("accepted").encoded();
                let eb = AppVersion::parse(&b_text).expect("accepted").encoded();
                prop_assert!(ea >= 0);
                // Versions compare as (major, minor, patch); so do their encodings, and
                // equal encodings mean equal versions.
                prop_assert_eq!(a.cmp(&b), ea.cmp(&eb));
            }

            #[test]
            fn anything_else_is_refused_never_silently_zero(text in "\\PC{0,12}") {
                if let Ok(version) = AppVersion::parse(&text) {
                    let parts: Vec<u32> = text.trim().split('.').map(|p| p.parse().expect("digits")).collect();
                    let [major, minor, patch] = [0, 1, 2].map(|i| parts.get(i).copied().unwrap_or(0));
                    prop_assert_eq!(version.encoded() as u32, major * 1_000_000 + minor * 1_000 + patch);
                }
            }
        }
    }
}
