//! One request against the tenant: the context every endpoint handler gets, and the checks
//! common to all of them. The dispatch from endpoint to handler is the parent module's.

use rand::Rng as _;
use serde_json::{json, Value};
use tokio::time::Instant;

use super::config::{Channel, SignUpPolicy};
use super::state::{Entry, FlowCtx, State, Step, User};
use super::wire::{
    is_guid, Capabilities, ChallengeTypes, Endpoint, Fault, Params, RedirectReason, Reply,
};
use super::OutboxEntry;

/// The tenant's fixed facts, derived once from the config.
pub(crate) struct Tenant {
    pub domain: String,
    pub id: String,
    /// Lowercased; empty accepts any GUID.
    pub client_ids: Vec<String>,
    pub code_length: usize,
    pub signup: SignUpPolicy,
    pub issuer: String,
    pub signing_key: [u8; 32],
}

impl Tenant {
    /// Whether a path segment names this tenant, in either form (reference §1.1).
    pub(crate) fn is_named(&self, segment: &str) -> bool {
        segment.eq_ignore_ascii_case(&self.domain) || segment.eq_ignore_ascii_case(&self.id)
    }
}

pub(crate) struct Cx<'a> {
    pub tenant: &'a Tenant,
    pub state: &'a mut State,
    pub params: &'a Params,
    pub endpoint: Endpoint,
    pub client_id: String,
    pub now: Instant,
}

impl<'a> Cx<'a> {
    /// The context of one request, once its `client_id` is one the tenant accepts.
    pub(crate) fn new(
        tenant: &'a Tenant,
        state: &'a mut State,
        params: &'a Params,
        endpoint: Endpoint,
        now: Instant,
    ) -> Result<Self, Fault> {
        let client_id = checked_client_id(tenant, params)?;
        Ok(Self {
            tenant,
            state,
            params,
            endpoint,
            client_id,
            now,
        })
    }

    /// The request's `oob` is the code that was sent.
    pub(crate) fn check_code(&self, expected: &str) -> Result<(), Fault> {
        let given = self.params.required("oob")?;
        if given == expected {
            Ok(())
        } else {
            Err(Fault::wrong_code())
        }
    }
}

fn checked_client_id(tenant: &Tenant, params: &Params) -> Result<String, Fault> {
    let client_id = params.required("client_id")?;
    if !is_guid(client_id) {
        return Err(Fault::malformed_client_id());
    }
    let client_id = client_id.to_ascii_lowercase();
    if !tenant.client_ids.is_empty() && !tenant.client_ids.contains(&client_id) {
        return Err(Fault::unauthorized_client(&tenant.domain));
    }
    Ok(client_id)
}

impl Cx<'_> {
    /// The flow behind the request's `continuation_token`.
    pub(crate) fn entry(&self) -> Result<(String, Entry), Fault> {
        let token = self.params.required("continuation_token")?;
        let entry = self
            .state
            .flows
            .get(token, &self.client_id, self.now, self.endpoint)?;
        Ok((token.to_owned(), entry))
    }

    /// A flow starting with this request, which carries its `capabilities`.
    pub(crate) fn new_flow(&self, challenge_types: ChallengeTypes) -> FlowCtx {
        FlowCtx {
            client_id: self.client_id.clone(),
            capabilities: Capabilities::from_params(self.params),
            challenge_types,
            verified_email: None,
        }
    }

    pub(crate) fn start(&mut self, flow: FlowCtx, step: Step) -> String {
        self.state.flows.start(flow, step, self.now)
    }

    pub(crate) fn advance(&mut self, old: &str, flow: FlowCtx, step: Step) -> String {
        self.state.flows.advance(old, flow, step, self.now)
    }

    /// Moves the flow to `step` without retiring `token`: for answers after which a client
    /// may send the same token again.
    pub(crate) fn stay(&mut self, token: &str, step: Step) {
        self.state.flows.update(token, step);
    }

    /// Ends the flow with a redirect to the browser: the native flow cannot continue.
    pub(crate) fn redirect(&mut self, token: &str, reason: RedirectReason) -> Reply {
        self.state.flows.finish(token);
        Reply::Redirect { reason }
    }

    /// The user a flow is about. A user evicted mid-flow makes the token meaningless.
    pub(crate) fn user(&self, username: &str) -> Result<User, Fault> {
        self.state
            .users
            .get(username)
            .cloned()
            .ok_or_else(|| Fault::bad_token(self.endpoint))
    }

    /// "Sends" a fresh code: records it in the outbox and returns it for the flow to check.
    pub(crate) fn send_code(&mut self, channel: Channel, target: &str) -> String {
        let mut rng = rand::thread_rng();
        let code: String = (0..self.tenant.code_length)
            .map(|_| char::from(b'0' + rng.gen_range(0..10u8)))
            .collect();
        let at = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        self.state.outbox.push(OutboxEntry {
            channel: channel.as_str().to_owned(),
            target: target.to_owned(),
            code: code.clone(),
            endpoint: self.endpoint.path().to_owned(),
            at,
        });
        tracing::debug!(
            channel = channel.as_str(),
            endpoint = self.endpoint.path(),
            "one-time code sent"
        );
        code
    }

    /// The answer to a challenge that sent a code (reference §5.1).
    pub(crate) fn code_sent(&self, token: String, channel: Channel, label: String) -> Value {
        json!({
            "continuation_token": token,
            "challenge_type": "oob",
            "binding_method": "prompt",
            "challenge_channel": channel.as_str(),
            "challenge_target_label": label,
            "code_length": self.tenant.code_length,
        })
    }
}
