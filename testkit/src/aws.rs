//! A KMS key and SQS queues of each test's own on the stack's moto server.

use aws_config::BehaviorVersion;
use aws_sdk_kms::config::Credentials;
use aws_sdk_sqs::types::{QueueAttributeName, SendMessageBatchRequestEntry};
use login_etl_core::keys::Kms;
use serde_json::json;

use crate::{env, unique_suffix};

/// The moto server the stack runs.
pub fn aws_endpoint() -> String {
    env("AWS_ENDPOINT_URL")
}

/// The SDK configured for `endpoint` with moto's test credentials.
pub async fn sdk_config(endpoint: &str) -> aws_config::SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "tests"))
        .load()
        .await
}

/// A KMS key of this test's own on the moto server.
pub async fn new_kms() -> Kms {
    let client = aws_sdk_kms::Client::new(&sdk_config(&aws_endpoint()).await);
    let key = client.create_key().description("login-etl test key").send().await.expect("moto CreateKey");
    let key_id = key.key_metadata().expect("key metadata").key_id().to_owned();
    Kms::new(client, key_id)
}
/// A queue, a replay queue (what only the vault service sends to) and their dead-letter
/// queue, of one test's own on the moto server.
pub struct TestQueues {
    pub sqs: aws_sdk_sqs::Client,
    pub queue_url: String,
    pub dlq_url: String,
    pub replay_queue_url: String,
    /// What the function's `REPLAY_QUEUE_ARN` names.
    pub replay_queue_arn: String,
}

async fn queue_arn(sqs: &aws_sdk_sqs::Client, url: &str) -> String {
    sqs.get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("queue arn")
        .attributes
        .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
        .expect("arn")
}

impl TestQueues {
    /// The DLQ receives what either queue received `max_receive_count` times.
    pub async fn new(max_receive_count: u32, visibility_timeout: u32) -> TestQueues {
        let sqs = aws_sdk_sqs::Client::new(&sdk_config(&aws_endpoint()).await);
        let name = format!("esm-test-{}", unique_suffix());
        let dlq_url = sqs
            .create_queue()
            .queue_name(format!("{name}-dlq"))
            .send()
            .await
            .expect("dlq")
            .queue_url
            .expect("url");
        let dlq_arn = queue_arn(&sqs, &dlq_url).await;
        let redrive =
            json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receive_count.to_string()});
        let mut urls = Vec::new();
        for name in [name.clone(), format!("{name}-replay")] {
            let url = sqs
                .create_queue()
                .queue_name(&name)
                .attributes(QueueAttributeName::VisibilityTimeout, visibility_timeout.to_string())
                .attributes(QueueAttributeName::RedrivePolicy, redrive.to_string())
                .send()
                .await
                .expect("queue")
                .queue_url
                .expect("url");
            urls.push(url);
        }
        let replay_queue_url = urls.pop().expect("replay queue");
        let queue_url = urls.pop().expect("queue");
        let replay_queue_arn = queue_arn(&sqs, &replay_queue_url).await;
        TestQueues { sqs, queue_url, dlq_url, replay_queue_url, replay_queue_arn }
    }

    /// The vault service's view of them: it replays to the replay queue and imports from
    /// the dead-letter queue.
    pub fn for_vault_service(&self) -> pii_vault_service::queues::Queues {
        pii_vault_service::queues::Queues::new(
            self.sqs.clone(),
            Some(self.replay_queue_url.clone()),
            Some(self.dlq_url.clone()),
        )
    }

    /// Sends the bodies, ten per `SendMessageBatch`.
    pub async fn send(&self, bodies: &[String]) {
        for chunk in bodies.chunks(10) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, body)| {
                    SendMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message_body(body)
                        .build()
                        .expect("entry")
                })
                .collect();
            let output = self
                .sqs
                .send_message_batch()
                .queue_url(&self.queue_url)
                .set_entries(Some(entries))
                .send()
                .await;
            assert!(output.expect("send").failed().is_empty());
        }
    }
}
