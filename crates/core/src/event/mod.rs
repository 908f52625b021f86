//! The event layer: one SQS message body in, a [`LoginEvent`] that can only hold valid
//! values out, or a [`RejectReason`] with a stable code. Pure: no I/O, no keys.
//!
//! No error or `Debug` output of this layer ever contains a field's value: bodies carry PII.

mod app_version;
mod body;
mod login;
mod message_id;
mod reject;
pub mod text;

pub use app_version::{AppVersion, AppVersionError, MAX_MAJOR, MAX_MINOR_OR_PATCH};
pub use login::{ClientIp, ColumnText, DeviceId, LoginDetails, LoginEvent, ReadablePii};
pub use message_id::{MessageId, MessageIdError};
pub use reject::{Field, RejectReason};
