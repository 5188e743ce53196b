//! The agent's identity on the hub.
//!
//! Registration: the provider's bootstrap token (a Kubernetes bootstrap token whose only
//! permission is to request a token for the agent's ServiceAccount in its own hub
//! namespace) buys the first ServiceAccount token. From then on the agent renews that
//! token with itself, well before it expires, and keeps it in a Secret of its own
//! cluster, so a restarted agent resumes without the bootstrap token. Swapping the token
//! changes only the hub client; nothing in the member cluster is touched.

use std::time::Duration;

use base64::Engine as _;
use gpufed_api::pull::AGENT_SERVICE_ACCOUNT;
use k8s_openapi::ByteString;
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::api::{Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

/// A hub token and its lifetime.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The bearer token.
    pub token: String,
    /// When the agent received it (Unix seconds, the agent's clock).
    pub issued_at: i64,
    /// When the hub stops accepting it (Unix seconds, the hub's clock: for the log).
    pub expires_at: i64,
    /// How long the hub grants it for (seconds): its `exp` − `iat`, both the hub's clock
    /// ([`lifetime`]). The schedule runs on the agent's clock from `issued_at` with this
    /// length, so no skew between the two clocks moves it.
    pub lifetime: i64,
}

/// What to do about the identity now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Due {
    /// Use it.
    Keep,
    /// Use it, and renew it with itself.
    Renew,
    /// Unusable (missing or about to expire): register with the bootstrap token.
    Register,
}

/// Pure: the token's lifetime as the hub granted it — `exp` − `iat` of the ServiceAccount
/// token (a JWT; the payload is read, not verified: only the hub's answer is trusted, and
/// only for its schedule), else `fallback`. Both claims are the hub's clock, so the
/// difference holds on any agent clock; the agent's `issued_at` − the hub's `expires_at`
/// did not (an agent clock 40 min ahead saw a 1 h token as a 20 min one).
pub fn lifetime(token: &str, fallback: i64) -> i64 {
    #[derive(serde::Deserialize)]
    struct Claims {
        iat: i64,
        exp: i64,
    }
    let claims = token
        .split('.')
        .nth(1)
        .and_then(|p| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(p.trim_end_matches('='))
                .ok()
        })
        .and_then(|b| serde_json::from_slice::<Claims>(&b).ok());
    match claims {
        Some(c) if c.exp > c.iat => c.exp - c.iat,
        _ => fallback.max(0),
    }
}

/// Pure: renew after `renew_after`, or at half the lifetime the hub granted when that
/// comes first — a hub that caps token lifetimes (`--service-account-max-token-expiration`)
/// grants less than was asked for, and at half, a hub unreachable for up to half the
/// lifetime still finds the agent renewing (every round) with a valid token; register
/// again when less than `margin` is left. Everything on the agent's clock: `issued_at`,
/// `lifetime` and `now`.
pub fn due(identity: Option<&Identity>, now: i64, renew_after: Duration, margin: Duration) -> Due {
    let Some(id) = identity else {
        return Due::Register;
    };
    let margin = i64::try_from(margin.as_secs()).unwrap_or(i64::MAX);
    let granted = id.lifetime.max(0);
    let renew = i64::try_from(renew_after.as_secs())
        .unwrap_or(i64::MAX)
        .min(granted / 2);
    if id.issued_at.saturating_add(granted).saturating_sub(margin) <= now {
        Due::Register
    } else if id.issued_at.saturating_add(renew) <= now {
        Due::Renew
    } else {
        Due::Keep
    }
}

/// Pure: whether the hub refused `e`'s request as unauthenticated (401): the token is
/// not (or no longer) one it takes — its ServiceAccount deleted or made again, its
/// signing key rotated. Renewing with it cannot work; only registering again can.
pub fn unauthorized(e: &anyhow::Error) -> bool {
    e.chain()
        .any(|c| matches!(c.downcast_ref::<kube::Error>(), Some(kube::Error::Api(s)) if s.code == 401))
}

/// Pure: how long to wait before registering again after `failures` failed registrations
/// in a row: 5 s, doubling, at most a minute — an agent with a spent bootstrap token asks
/// the hub once a minute, not at every wake of its loop (every second while a challenge
/// is open), yet takes a new token within a minute of its being put in place.
pub fn register_backoff(failures: u32) -> Duration {
    let doubled = 5u64.saturating_mul(1u64 << failures.saturating_sub(1).min(8));
    Duration::from_secs(doubled.min(60))
}

/// How to reach the hub.
#[derive(Clone)]
pub struct HubEndpoint {
    /// `https://host:port`.
    pub server: String,
    /// The hub's CA bundle (PEM).
    pub ca_pem: Vec<u8>,
    /// The agent's hub namespace.
    pub namespace: String,
    /// Bound on each request.
    pub timeout: Duration,
}

impl HubEndpoint {
    /// A hub client that authenticates with `bearer`.
    pub async fn client(&self, bearer: &str) -> anyhow::Result<Client> {
        let ca = base64::engine::general_purpose::STANDARD.encode(&self.ca_pem);
        let kc = serde_json::json!({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "hub", "cluster": {"server": self.server, "certificate-authority-data": ca}}],
            "users": [{"name": "gpufed-agent", "user": {"token": bearer}}],
            "contexts": [{"name": "hub", "context": {"cluster": "hub", "user": "gpufed-agent", "namespace": self.namespace}}],
            "current-context": "hub",
        });
        let kc = Kubeconfig::from_yaml(&kc.to_string())?;
        let mut config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
        config.connect_timeout = Some(self.timeout);
        config.read_timeout = Some(self.timeout);
        config.write_timeout = Some(self.timeout);
        Ok(Client::try_from(config)?)
    }

    /// Asks the hub, as whoever `client` is, for a token of the agent's ServiceAccount.
    pub async fn request_token(&self, client: &Client, ttl: Duration, now: i64) -> anyhow::Result<Identity> {
        let api: Api<ServiceAccount> = Api::namespaced(client.clone(), &self.namespace);
        let body = serde_json::json!({
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
            "spec": {"audiences": [], "expirationSeconds": ttl.as_secs()},
        });
        let tr: TokenRequest = api
            .create_subresource("token", AGENT_SERVICE_ACCOUNT, &PostParams::default(), &body)
            .await?;
        let status = tr
            .status
            .ok_or_else(|| anyhow::anyhow!("TokenRequest answered without a token"))?;
        let expires_at = status.expiration_timestamp.0.as_second();
        // A token that is no JWT: what was asked for, or less if the hub's expiry says so
        // on the agent's clock (a hub caps, never extends, these tokens).
        let asked = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
        let left = expires_at.saturating_sub(now);
        let fallback = if left > 0 { left.min(asked) } else { asked };
        Ok(Identity {
            lifetime: lifetime(&status.token, fallback),
            token: status.token,
            issued_at: now,
            expires_at,
        })
    }
}

/// Where the identity is kept: a Secret in the agent's namespace of its own cluster.
pub struct IdentityStore {
    api: Api<Secret>,
    name: String,
}

impl IdentityStore {
    /// The Secret `name` in the member client's default namespace.
    pub fn new(member: &Client, name: &str) -> Self {
        Self {
            api: Api::default_namespaced(member.clone()),
            name: name.to_owned(),
        }
    }

    /// The stored identity, if any (an unreadable one counts as none).
    pub async fn load(&self) -> Result<Option<Identity>, kube::Error> {
        let Some(secret) = self.api.get_opt(&self.name).await? else {
            return Ok(None);
        };
        let data = secret.data.unwrap_or_default();
        let text = |k: &str| data.get(k).and_then(|b| String::from_utf8(b.0.clone()).ok());
        let num = |k: &str| text(k).and_then(|t| t.parse::<i64>().ok());
        Ok(match (text("token"), num("issuedAt"), num("expiresAt")) {
            (Some(token), Some(issued_at), Some(expires_at)) => Some(Identity {
                // Stored by older agents without it: the token's own claims.
                lifetime: num("lifetime")
                    .unwrap_or_else(|| lifetime(&token, expires_at.saturating_sub(issued_at))),
                token,
                issued_at,
                expires_at,
            }),
            _ => None,
        })
    }

    /// Stores `id` (server-side apply, the agent's field manager).
    pub async fn save(&self, id: &Identity) -> Result<(), kube::Error> {
        let bytes = |s: String| ByteString(s.into_bytes());
        let secret = serde_json::json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": self.name, "labels": {"app.kubernetes.io/managed-by": gpufed_api::pull::AGENT_FIELD_MANAGER}},
            "type": "Opaque",
            "data": {
                "token": bytes(id.token.clone()),
                "issuedAt": bytes(id.issued_at.to_string()),
                "expiresAt": bytes(id.expires_at.to_string()),
                "lifetime": bytes(id.lifetime.to_string()),
            },
        });
        self.api
            .patch(
                &self.name,
                &PatchParams::apply(gpufed_api::pull::AGENT_FIELD_MANAGER).force(),
                &Patch::Apply(&secret),
            )
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn api(code: u16) -> anyhow::Error {
        anyhow::Error::new(kube::Error::Api(
            kube::core::Status::failure("m", "r").with_code(code).boxed(),
        ))
    }

    #[test]
    fn a_token_the_hub_refuses_is_told_from_any_other_failure() {
        assert!(unauthorized(&api(401)));
        assert!(
            unauthorized(&api(401).context("listing assignments").context("round")),
            "under any context"
        );
        for code in [403, 404, 409, 500] {
            assert!(!unauthorized(&api(code)), "{code}");
        }
        assert!(
            !unauthorized(&anyhow::anyhow!("401 Unauthorized")),
            "no API answer"
        );
    }

    #[test]
    fn registering_again_backs_off_to_a_minute() {
        let waits: Vec<u64> = (1..=6).map(|n| register_backoff(n).as_secs()).collect();
        assert_eq!(waits, [5, 10, 20, 40, 60, 60]);
        assert_eq!(register_backoff(0).as_secs(), 5);
        assert_eq!(register_backoff(u32::MAX).as_secs(), 60);
    }

    /// A ServiceAccount-like token: a JWT whose payload has `iat` and `exp`.
    fn jwt(iat: i64, exp: i64) -> String {
        let b64 =
            |v: serde_json::Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        format!(
            "{}.{}.c2ln",
            b64(serde_json::json!({"alg": "RS256"})),
            b64(serde_json::json!({"iss": "hub", "iat": iat, "exp": exp, "nbf": iat}))
        )
    }

    fn id(issued_at: i64, lifetime: i64) -> Identity {
        Identity {
            token: "t".into(),
            issued_at,
            expires_at: issued_at + lifetime,
            lifetime,
        }
    }

    #[test]
    fn the_lifetime_is_the_hub_s_own_exp_minus_iat() {
        assert_eq!(lifetime(&jwt(1_000, 4_600), 99), 3_600);
        assert_eq!(lifetime("opaque", 1_800), 1_800, "no JWT: the fallback");
        assert_eq!(lifetime("a.!!!.c", 1_800), 1_800);
        assert_eq!(lifetime(&jwt(4_600, 1_000), 1_800), 1_800, "nonsense claims");
        assert_eq!(lifetime("opaque", -5), 0);
    }

    #[test]
    fn renews_at_half_its_lifetime_and_registers_only_when_unusable() {
        let id = id(1_000, 3_600);
        let (renew, margin) = (Duration::from_secs(2_880), Duration::from_secs(60));
        assert_eq!(due(None, 1_000, renew, margin), Due::Register);
        assert_eq!(due(Some(&id), 2_500, renew, margin), Due::Keep);
        assert_eq!(due(Some(&id), 2_800, renew, margin), Due::Renew, "half of 1 h");
        // A hub down since: renewal is tried until the last minute, not given up on.
        assert_eq!(due(Some(&id), 4_539, renew, margin), Due::Renew);
        assert_eq!(due(Some(&id), 4_540, renew, margin), Due::Register);
        assert_eq!(due(Some(&id), 9_999, renew, margin), Due::Register);
        // An earlier --renew-after is kept.
        assert_eq!(
            due(Some(&id), 1_600, Duration::from_secs(600), margin),
            Due::Renew
        );
    }

    #[test]
    fn a_token_granted_shorter_than_asked_is_renewed_on_its_own_lifetime() {
        // Asked for 1 h (renew after 48 min); the hub granted 30 min.
        let id = id(0, 1_800);
        let (renew, margin) = (Duration::from_secs(2_880), Duration::from_secs(60));
        assert_eq!(due(Some(&id), 800, renew, margin), Due::Keep);
        assert_eq!(due(Some(&id), 900, renew, margin), Due::Renew, "half of 30 min");
    }

    /// The defect: the schedule mixed the agent's clock (`issued_at`) with the hub's
    /// (`expires_at`). An agent 40 min ahead of the hub took a 1 h token for a 20 min one
    /// and registered (with a bootstrap token likely long gone) 19 min after getting it; one
    /// 40 min behind kept using it 40 min after it expired. The lifetime now comes from the
    /// token's own claims, and the schedule runs on the agent's clock only.
    #[test]
    fn a_skewed_agent_clock_does_not_move_the_schedule() {
        let (renew, margin) = (Duration::from_secs(2_880), Duration::from_secs(60));
        let hub_iat = 1_000_000;
        let token = jwt(hub_iat, hub_iat + 3_600);
        for skew in [-2_400, 0, 2_400, 7_200] {
            let issued_at = hub_iat + skew;
            let expires_at = hub_iat + 3_600;
            let fallback = expires_at - issued_at;
            let id = Identity {
                lifetime: lifetime(&token, fallback),
                token: token.clone(),
                issued_at,
                expires_at,
            };
            let at = |after: i64| due(Some(&id), issued_at + after, renew, margin);
            assert_eq!(at(1_140), Due::Keep, "skew {skew}");
            assert_eq!(at(1_800), Due::Renew, "skew {skew}");
            assert_eq!(at(3_540), Due::Register, "skew {skew}");
        }
    }
}
