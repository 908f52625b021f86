//! The service's SQS side: the replay queue it sends quarantined bodies to (`REPLAY_QUEUE_URL`;
//! only the service's role may send there, which is what makes the function honour a
//! replay's attributes) and the dead-letter queue it empties into the quarantine
//! (`DEAD_LETTER_QUEUE_URL`). Either unset: the operation that needs it is refused with
//! `not_configured`, the others work.

use aws_sdk_sqs::config::timeout::TimeoutConfig;
use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, Message, MessageAttributeValue, MessageSystemAttributeName,
};

/// The longest one SQS call (retries included) may take.
pub const OPERATION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// How long a received dead-letter message stays hidden while it is imported: far longer
/// than a request may take, so no other import sees it meanwhile.
const IMPORT_VISIBILITY_SECONDS: i32 = 120;

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("{0} is not set on the vault service, so this operation is not available")]
    NotConfigured(&'static str),
    // The SDK's error chain: codes and transport causes, never a request's body.
    #[error("SQS {operation} failed: {message}")]
    Sqs { operation: &'static str, message: String },
}

fn sqs_error<E: std::error::Error + 'static>(operation: &'static str) -> impl FnOnce(E) -> QueueError {
    move |error| QueueError::Sqs { operation, message: DisplayErrorContext(error).to_string() }
}

/// Whether SQS took a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    Sent,
    /// Refused for what the message is (characters SQS does not carry, too large).
    Refused,
}

/// The queues, as the service's environment names them.
#[derive(Debug, Clone, Default)]
pub struct Queues {
    sqs: Option<aws_sdk_sqs::Client>,
    replay_queue_url: Option<String>,
    dead_letter_queue_url: Option<String>,
}

impl Queues {
    pub fn new(
        sqs: aws_sdk_sqs::Client,
        replay_queue_url: Option<String>,
        dead_letter_queue_url: Option<String>,
    ) -> Queues {
        let set = |url: Option<String>| url.map(|u| u.trim().to_owned()).filter(|u| !u.is_empty());
        Queues {
            sqs: Some(sqs),
            replay_queue_url: set(replay_queue_url),
            dead_letter_queue_url: set(dead_letter_queue_url),
        }
    }

    /// `REPLAY_QUEUE_URL` and `DEAD_LETTER_QUEUE_URL`, each optional. Each SQS call is
    /// bounded ([`OPERATION_TIMEOUT`]), so a hung SQS cannot hold a request past the
    /// service's timeout.
    pub fn from_env(sdk: &aws_config::SdkConfig) -> Queues {
        let var = |name| std::env::var(name).ok();
        let timeouts = TimeoutConfig::builder().operation_timeout(OPERATION_TIMEOUT).build();
        let config = aws_sdk_sqs::config::Builder::from(sdk).timeout_config(timeouts).build();
        Queues::new(
            aws_sdk_sqs::Client::from_conf(config),
            var("REPLAY_QUEUE_URL"),
            var("DEAD_LETTER_QUEUE_URL"),
        )
    }

    fn client(&self, setting: &'static str) -> Result<&aws_sdk_sqs::Client, QueueError> {
        self.sqs.as_ref().ok_or(QueueError::NotConfigured(setting))
    }

    /// The replay queue's URL, or why it cannot be used.
    pub fn replay_queue_url(&self) -> Result<&str, QueueError> {
        self.replay_queue_url.as_deref().ok_or(QueueError::NotConfigured("REPLAY_QUEUE_URL"))
    }

    pub fn dead_letter_queue_url(&self) -> Result<&str, QueueError> {
        self.dead_letter_queue_url.as_deref().ok_or(QueueError::NotConfigured("DEAD_LETTER_QUEUE_URL"))
    }

    /// Sends one body to the replay queue with the given string/number attributes
    /// ((name, SQS data type, value)). `Refused` when SQS refuses this message itself (its
    /// characters or its size), as opposed to failing.
    pub async fn send_replay(
        &self,
        body: &str,
        attributes: &[(&'static str, &'static str, String)],
    ) -> Result<Sent, QueueError> {
        let url = self.replay_queue_url()?;
        let mut send = self.client("REPLAY_QUEUE_URL")?.send_message().queue_url(url).message_body(body);
        for (name, data_type, value) in attributes {
            let value = MessageAttributeValue::builder()
                .data_type(*data_type)
                .string_value(value)
                .build()
                .map_err(sqs_error("SendMessage"))?;
            send = send.message_attributes(*name, value);
        }
        match send.send().await {
            Ok(_) => Ok(Sent::Sent),
            Err(error) => {
                let refused = error.as_service_error().is_some_and(|e| {
                    e.is_invalid_message_contents()
                        || matches!(e.meta().code(), Some("InvalidParameterValue" | "InvalidMessageContents"))
                });
                if refused { Ok(Sent::Refused) } else { Err(sqs_error("SendMessage")(error)) }
            }
        }
    }

    /// Up to `max` (1 to 10) messages of the dead-letter queue, with every attribute,
    /// hidden for the import.
    pub async fn receive_dead_letters(&self, max: i32) -> Result<Vec<Message>, QueueError> {
        let url = self.dead_letter_queue_url()?;
        let output = self
            .client("DEAD_LETTER_QUEUE_URL")?
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(max.clamp(1, 10))
            .visibility_timeout(IMPORT_VISIBILITY_SECONDS)
            // A short long-poll: an empty answer then means the queue is (nearly) empty,
            // not that a short poll sampled the wrong servers.
            .wait_time_seconds(1)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .send()
            .await
            .map_err(sqs_error("ReceiveMessage"))?;
        Ok(output.messages.unwrap_or_default())
    }

    /// Deletes received dead-letter messages (at most 10); returns how many SQS deleted.
    pub async fn delete_dead_letters(&self, receipt_handles: &[String]) -> Result<usize, QueueError> {
        if receipt_handles.is_empty() {
            return Ok(0);
        }
        let url = self.dead_letter_queue_url()?;
        let entries = receipt_handles
            .iter()
            .enumerate()
            .map(|(i, handle)| {
                DeleteMessageBatchRequestEntry::builder().id(i.to_string()).receipt_handle(handle).build()
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(sqs_error("DeleteMessageBatch"))?;
        let output = self
            .client("DEAD_LETTER_QUEUE_URL")?
            .delete_message_batch()
            .queue_url(url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(sqs_error("DeleteMessageBatch"))?;
        for failure in output.failed() {
            tracing::warn!(
                code = failure.code(),
                "a dead-letter message could not be deleted; it will be imported again"
            );
        }
        Ok(output.successful().len())
    }
}

/// Whether `arn` (a message's `DeadLetterQueueSourceArn`) names the queue at `url`. An SQS
/// URL ends in `/ACCOUNT/NAME`, an ARN in `:ACCOUNT:NAME`; a dead-letter queue and its
/// sources share a region, so account and name decide.
pub fn arn_names_queue(arn: &str, url: &str) -> bool {
    let mut arn_parts = arn.rsplit(':');
    let (Some(arn_name), Some(arn_account)) = (arn_parts.next(), arn_parts.next()) else { return false };
    let mut url_parts = url.trim_end_matches('/').rsplit('/');
    let (Some(url_name), Some(url_account)) = (url_parts.next(), url_parts.next()) else { return false };
    arn.starts_with("arn:")
        && arn.split(':').nth(2) == Some("sqs")
        && !arn_name.is_empty()
        && (arn_account, arn_name) == (url_account, url_name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_arn_names_a_queue_by_account_and_name() {
        let url = "https://sqs.eu-west-1.amazonaws.com/123456789012/login-replay-queue";
        assert!(arn_names_queue("arn:aws:sqs:eu-west-1:123456789012:login-replay-queue", url));
        assert!(arn_names_queue("arn:aws:sqs:us-east-1:123456789012:login-replay-queue", &format!("{url}/")));
        assert!(!arn_names_queue("arn:aws:sqs:eu-west-1:123456789012:login-queue", url));
        assert!(!arn_names_queue("arn:aws:sqs:eu-west-1:999999999999:login-replay-queue", url));
        assert!(!arn_names_queue("arn:aws:sns:eu-west-1:123456789012:login-replay-queue", url));
        assert!(!arn_names_queue("login-replay-queue", url));
        assert!(!arn_names_queue("", url));
    }

    #[tokio::test]
    async fn unset_queues_are_refused_not_a_panic() {
        let queues = Queues::default();
        assert!(matches!(
            queues.send_replay("{}", &[]).await,
            Err(QueueError::NotConfigured("REPLAY_QUEUE_URL"))
        ));
        assert!(matches!(
            queues.receive_dead_letters(10).await,
            Err(QueueError::NotConfigured("DEAD_LETTER_QUEUE_URL"))
        ));
    }
}
