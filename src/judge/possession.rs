//! The Prove possession step-up: the check a provider answer started is bound to its flow,
//! and the client's retry is accepted once, for that flow, if Prove says so now.

use std::time::Duration;

use super::Judge;
use crate::entra::learn::FlowId;
use crate::policy::ProviderInput;
use crate::risk::{self, FailMode};
use crate::store::KeyHasher;

/// The header a client retries with after completing a Prove possession check: the
/// `correlationId` from the challenge.
pub(crate) const PROVE_CORRELATION_HEADER: &str = "x-otpgate-prove-correlation";

/// How long a started possession check stays bound to its flow.
const POSSESSION_TTL: Duration = Duration::from_secs(15 * 60);

/// What the store keeps about a possession check the gateway started.
#[derive(serde::Serialize, serde::Deserialize)]
struct PossessionBinding {
    flow: String,
    client_request_id: String,
}

fn possession_key(keys: &KeyHasher, correlation_id: &str) -> String {
    format!("prove:{}", keys.hash(correlation_id))
}

impl Judge {
    /// Remember which flow a Prove possession check belongs to, so only that flow's retry
    /// can use it.
    pub(super) async fn bind_possession(&self, session: &risk::PossessionSession, flow: &FlowId) {
        let binding = PossessionBinding {
            flow: flow.as_str().to_owned(),
            client_request_id: session.client_request_id.clone(),
        };
        if let Ok(value) = serde_json::to_vec(&binding) {
            let key = possession_key(&self.keys, &session.correlation_id);
            if let Err(e) = self.store.put(&key, &value, POSSESSION_TTL).await {
                tracing::warn!(error = %e, "possession check not recorded");
            }
        }
    }

    /// A retry after a Prove possession check: bound to this flow, used once, and passed
    /// only if Prove says so now. `Err` names why the retry's proof does not count.
    pub(super) async fn possession_retry(
        &self,
        prove: &risk::ProveProvider,
        correlation_id: &str,
        flow: &FlowId,
    ) -> Result<ProviderInput, &'static str> {
        let key = possession_key(&self.keys, correlation_id);
        let stored = self
            .store
            .get(&key)
            .await
            .map_err(|_| "store_unavailable")?
            .ok_or("prove_unknown")?;
        let binding: PossessionBinding =
            serde_json::from_slice(&stored).map_err(|_| "prove_unknown")?;
        if binding.flow != flow.as_str() {
            return Err("prove_wrong_flow");
        }
        if !self
            .store
            .take_once(&format!("{key}:used"), POSSESSION_TTL)
            .await
            .map_err(|_| "store_unavailable")?
        {
            return Err("replayed");
        }
        let started = std::time::Instant::now();
        let status = prove
            .possession_status(correlation_id, &binding.client_request_id)
            .await;
        let outcome = status.as_ref().map_or_else(|e| e.kind(), |_| "ok");
        self.metrics
            .provider_call("prove", outcome, started.elapsed());
        Ok(match status {
            Ok(status) => {
                let verdict = prove.verdict(&status);
                let mut reasons = verdict.reasons;
                reasons.push("prove:possession_checked".into());
                ProviderInput::Verdict {
                    action: verdict.action,
                    reasons,
                }
            }
            Err(e) => ProviderInput::Failed {
                error: e.kind(),
                fail_mode: FailMode::Closed,
            },
        })
    }
}
