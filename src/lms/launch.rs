//! What an LMS user's "Launch" click carries, the id_token built from it
//! (LTI Core 1.3 §5.3, Deep Linking 2.0 §4.4), and the ways a test can have
//! the platform tamper with that token.

use serde_json::{Map, Value, json};

use super::keys::{SigningKey, b64url, compact_jwt};

/// Prefix of the LTI Core claims.
pub const LTI: &str = "https://purl.imsglobal.org/spec/lti/claim/";
/// Prefix of the Deep Linking claims.
pub const LTI_DL: &str = "https://purl.imsglobal.org/spec/lti-dl/claim/";
/// The LIS role a student launches with.
pub const ROLE_LEARNER: &str = "http://purl.imsglobal.org/vocab/lis/v2/membership#Learner";
/// The LIS role a teacher launches (and picks content) with.
pub const ROLE_INSTRUCTOR: &str = "http://purl.imsglobal.org/vocab/lis/v2/membership#Instructor";

/// Seconds an id_token stays valid.
const ID_TOKEN_LIFETIME: i64 = 300;

/// Which LTI message a launch sends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MessageKind {
    /// `LtiResourceLinkRequest`: a student (or teacher) opens a placed link.
    #[default]
    ResourceLink,
    /// `LtiDeepLinkingRequest`: a teacher picks content to place in the course.
    DeepLinking,
}

impl MessageKind {
    /// The `message_type` claim value.
    pub fn message_type(self) -> &'static str {
        match self {
            MessageKind::ResourceLink => "LtiResourceLinkRequest",
            MessageKind::DeepLinking => "LtiDeepLinkingRequest",
        }
    }
}

/// How the platform tampers with one launch's id_token, so that tests can
/// prove the tool refuses each kind of bad token (Security Framework §5.1.3).
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Forgery {
    /// An honest token.
    #[default]
    None,
    /// Signed RS256 by a freshly generated key that is not published, under
    /// the current (published) kid.
    WrongKey,
    /// Header `alg: "none"` and an empty signature.
    AlgNone,
    /// HS256 with the platform's public key PEM bytes as the HMAC secret (the
    /// classic algorithm-confusion attack), kid kept.
    Hs256WithPublicKey,
    /// `exp` and `iat` over an hour in the past.
    Expired,
    /// A JSON Merge Patch (RFC 7396) applied over the built claims: members
    /// replace claims, nested objects merge, `null` removes. For a wrong
    /// `aud`, unknown `iss`, wrong `version`/`message_type`/`deployment_id`,
    /// missing `nonce`, and so on.
    Claims(Value),
    /// This nonce instead of the one the tool sent (replays, unknown nonces).
    Nonce(String),
    /// Signed honestly but with no `kid` in the header.
    NoKid,
}

/// One launch as an LMS would prepare it when a user clicks the link: who,
/// where, with what role, to which tool.
#[derive(Debug, Clone, PartialEq)]
pub struct Launch {
    /// The tool's client id on this platform.
    pub client_id: String,
    /// The deployment id sent in the login initiation and the id_token.
    pub deployment_id: String,
    /// The user's stable id: `login_hint` and the token's `sub`.
    pub user: String,
    /// The user's display name (`name` claim).
    pub name: Option<String>,
    /// LIS role URIs (`roles` claim).
    pub roles: Vec<String>,
    /// The course id (`context.id`), when launched from a course.
    pub context_id: Option<String>,
    /// The course title (`context.title`).
    pub context_title: Option<String>,
    /// The placed link's id (`resource_link.id`).
    pub resource_link_id: String,
    /// Custom parameters (`custom` claim), sent when non-empty.
    pub custom: Map<String, Value>,
    /// Resource link launch or deep-linking request.
    pub kind: MessageKind,
    /// Where the tool should land; by default the tool registration's (its
    /// deep-linking one, when registered, for deep linking).
    pub target_link_uri: Option<String>,
    /// Tampering with the id_token, for refusal tests.
    pub forgery: Forgery,
}

impl Launch {
    /// A student's resource link launch with no course, name or custom
    /// parameters.
    pub fn new(
        client_id: impl Into<String>,
        deployment_id: impl Into<String>,
        user: impl Into<String>,
        resource_link_id: impl Into<String>,
    ) -> Self {
        Self {
            client_id: client_id.into(),
            deployment_id: deployment_id.into(),
            user: user.into(),
            name: None,
            roles: vec![ROLE_LEARNER.to_owned()],
            context_id: None,
            context_title: None,
            resource_link_id: resource_link_id.into(),
            custom: Map::new(),
            kind: MessageKind::ResourceLink,
            target_link_uri: None,
            forgery: Forgery::None,
        }
    }

    /// This launch as a teacher's deep-linking request (roles become
    /// Instructor).
    pub fn deep_linking(mut self) -> Self {
        self.kind = MessageKind::DeepLinking;
        self.roles = vec![ROLE_INSTRUCTOR.to_owned()];
        self
    }

    /// This launch with its id_token tampered with.
    pub fn forged(mut self, forgery: Forgery) -> Self {
        self.forgery = forgery;
        self
    }

    /// This launch from inside a course.
    pub fn in_context(mut self, id: impl Into<String>, title: impl Into<String>) -> Self {
        self.context_id = Some(id.into());
        self.context_title = Some(title.into());
        self
    }
}

/// What the platform knows at `/authorize` time, beyond the [`Launch`].
pub(crate) struct TokenContext<'a> {
    pub issuer: &'a str,
    pub nonce: &'a str,
    pub target_link_uri: &'a str,
    pub platform_guid: &'a str,
    /// `deep_link_return_url` and `data`, for deep-linking requests.
    pub deep_link: Option<(&'a str, &'a str)>,
}

/// Name the platform gives itself in `tool_platform`.
pub const PLATFORM_NAME: &str = "labpool test LMS";
/// `product_family_code` of this platform.
pub const PRODUCT_FAMILY_CODE: &str = "labpool-test-lms";

/// The id_token claims for `launch`, with claim-level forgeries applied.
pub(crate) fn claims(launch: &Launch, ctx: &TokenContext<'_>, now: i64) -> Value {
    let (iat, nonce) = match &launch.forgery {
        Forgery::Expired => (now - 3600 - ID_TOKEN_LIFETIME, ctx.nonce),
        Forgery::Nonce(nonce) => (now, nonce.as_str()),
        _ => (now, ctx.nonce),
    };
    let mut claims = json!({
        "iss": ctx.issuer,
        "aud": launch.client_id,
        "azp": launch.client_id,
        "sub": launch.user,
        "iat": iat,
        "exp": iat + ID_TOKEN_LIFETIME,
        "nonce": nonce,
    });
    let c = claims.as_object_mut().expect("an object");
    if let Some(name) = &launch.name {
        c.insert("name".into(), json!(name));
    }
    let mut lti = |name: &str, value: Value| {
        c.insert(format!("{LTI}{name}"), value);
    };
    lti("message_type", json!(launch.kind.message_type()));
    lti("version", json!("1.3.0"));
    lti("deployment_id", json!(launch.deployment_id));
    lti("target_link_uri", json!(ctx.target_link_uri));
    if launch.kind == MessageKind::ResourceLink {
        lti(
            "resource_link",
            json!({"id": launch.resource_link_id, "title": format!("Link {}", launch.resource_link_id)}),
        );
    }
    lti("roles", json!(launch.roles));
    if let Some(id) = &launch.context_id {
        let mut context = json!({"id": id});
        if let Some(title) = &launch.context_title {
            context["title"] = json!(title);
        }
        lti("context", context);
    }
    if !launch.custom.is_empty() {
        lti("custom", Value::Object(launch.custom.clone()));
    }
    lti(
        "tool_platform",
        json!({"guid": ctx.platform_guid, "name": PLATFORM_NAME, "product_family_code": PRODUCT_FAMILY_CODE}),
    );
    lti(
        "launch_presentation",
        json!({"document_target": "iframe", "locale": "en"}),
    );
    if let (MessageKind::DeepLinking, Some((return_url, data))) = (launch.kind, ctx.deep_link) {
        c.insert(
            format!("{LTI_DL}deep_linking_settings"),
            json!({
                "deep_link_return_url": return_url,
                "accept_types": ["ltiResourceLink"],
                "accept_presentation_document_targets": ["iframe", "window"],
                "accept_multiple": false,
                "auto_create": true,
                "data": data,
            }),
        );
    }
    if let Forgery::Claims(patch) = &launch.forgery {
        merge_patch(&mut claims, patch);
    }
    claims
}

/// Signs `claims` with `key`, or forges the signature as `forgery` says.
pub(crate) fn sign(key: &SigningKey, forgery: &Forgery, claims: &Value) -> anyhow::Result<String> {
    match forgery {
        Forgery::WrongKey => SigningKey::generate_with_kid(key.kid().to_owned())?.sign(claims),
        Forgery::AlgNone => Ok(compact_jwt(
            &json!({"alg": "none", "typ": "JWT", "kid": key.kid()}),
            claims,
            b"",
        )),
        Forgery::Hs256WithPublicKey => {
            let header = json!({"alg": "HS256", "typ": "JWT", "kid": key.kid()});
            let signing_input = format!(
                "{}.{}",
                b64url(header.to_string().as_bytes()),
                b64url(claims.to_string().as_bytes())
            );
            let hmac_key = aws_lc_rs::hmac::Key::new(
                aws_lc_rs::hmac::HMAC_SHA256,
                key.public_key_pem().as_bytes(),
            );
            let tag = aws_lc_rs::hmac::sign(&hmac_key, signing_input.as_bytes());
            Ok(format!("{signing_input}.{}", b64url(tag.as_ref())))
        }
        Forgery::NoKid => {
            let mut header = key.header();
            header.kid = None;
            key.sign_with_header(&header, claims)
        }
        Forgery::None | Forgery::Expired | Forgery::Claims(_) | Forgery::Nonce(_) => {
            key.sign(claims)
        }
    }
}

/// JSON Merge Patch (RFC 7396): objects merge member by member, `null`
/// removes, anything else replaces.
pub(crate) fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let target = target.as_object_mut().expect("made an object");
    for (name, value) in patch {
        if value.is_null() {
            target.remove(name);
        } else {
            merge_patch(target.entry(name.clone()).or_insert(Value::Null), value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use jsonwebtoken::{Algorithm, DecodingKey, Validation};

    fn ctx<'a>() -> TokenContext<'a> {
        TokenContext {
            issuer: "http://127.0.0.1:1",
            nonce: "n-1",
            target_link_uri: "http://tool/launch",
            platform_guid: "guid",
            deep_link: Some(("http://127.0.0.1:1/deep-link/return", "data-1")),
        }
    }

    fn part(token: &str, i: usize) -> Value {
        let part = token.split('.').nth(i).unwrap();
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
    }

    fn verify(key: &SigningKey, token: &str) -> jsonwebtoken::errors::Result<Value> {
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_audience(&["client-1"]);
        validation.set_issuer(&["http://127.0.0.1:1"]);
        let decoding = DecodingKey::from_jwk(key.jwk()).unwrap();
        jsonwebtoken::decode::<Value>(token, &decoding, &validation).map(|t| t.claims)
    }

    fn mint(key: &SigningKey, launch: &Launch) -> String {
        let now = chrono::Utc::now().timestamp();
        sign(key, &launch.forgery, &claims(launch, &ctx(), now)).unwrap()
    }

    #[test]
    fn honest_resource_link_claims() {
        let launch = Launch::new("client-1", "dep-1", "user-1", "rl-1").in_context("c1", "Course");
        let claims = claims(&launch, &ctx(), 1000);
        assert_eq!(claims["iss"], "http://127.0.0.1:1");
        assert_eq!(claims["aud"], "client-1");
        assert_eq!(claims["azp"], "client-1");
        assert_eq!(claims["sub"], "user-1");
        assert_eq!(claims["nonce"], "n-1");
        assert_eq!(claims["exp"], 1300);
        assert_eq!(
            claims[format!("{LTI}message_type")],
            "LtiResourceLinkRequest"
        );
        assert_eq!(claims[format!("{LTI}version")], "1.3.0");
        assert_eq!(claims[format!("{LTI}deployment_id")], "dep-1");
        assert_eq!(claims[format!("{LTI}resource_link")]["id"], "rl-1");
        assert_eq!(claims[format!("{LTI}roles")][0], ROLE_LEARNER);
        assert_eq!(claims[format!("{LTI}context")]["title"], "Course");
        assert!(claims.get(format!("{LTI}custom")).is_none());
        assert!(
            claims
                .get(format!("{LTI_DL}deep_linking_settings"))
                .is_none()
        );
    }

    #[test]
    fn deep_linking_claims() {
        let launch = Launch::new("client-1", "dep-1", "teacher", "").deep_linking();
        let claims = claims(&launch, &ctx(), 1000);
        assert_eq!(
            claims[format!("{LTI}message_type")],
            "LtiDeepLinkingRequest"
        );
        assert_eq!(claims[format!("{LTI}roles")][0], ROLE_INSTRUCTOR);
        assert!(claims.get(format!("{LTI}resource_link")).is_none());
        let settings = &claims[format!("{LTI_DL}deep_linking_settings")];
        assert_eq!(
            settings["deep_link_return_url"],
            "http://127.0.0.1:1/deep-link/return"
        );
        assert_eq!(settings["data"], "data-1");
        assert_eq!(settings["accept_types"], json!(["ltiResourceLink"]));
    }

    #[test]
    fn honest_token_verifies() {
        let key = SigningKey::generate().unwrap();
        let token = mint(&key, &Launch::new("client-1", "dep-1", "u", "rl"));
        assert_eq!(part(&token, 0)["kid"], key.kid());
        assert_eq!(part(&token, 0)["typ"], "JWT");
        assert_eq!(verify(&key, &token).unwrap()["nonce"], "n-1");
    }

    #[test]
    fn forgeries_produce_what_they_claim() {
        let key = SigningKey::generate().unwrap();
        let launch = |f| Launch::new("client-1", "dep-1", "u", "rl").forged(f);

        let wrong_key = mint(&key, &launch(Forgery::WrongKey));
        assert_eq!(part(&wrong_key, 0)["kid"], key.kid());
        assert_eq!(part(&wrong_key, 0)["alg"], "RS256");
        assert!(verify(&key, &wrong_key).is_err());

        let none = mint(&key, &launch(Forgery::AlgNone));
        assert_eq!(part(&none, 0)["alg"], "none");
        assert!(none.ends_with('.'));
        assert_eq!(part(&none, 1)["sub"], "u");

        let hs = mint(&key, &launch(Forgery::Hs256WithPublicKey));
        assert_eq!(part(&hs, 0)["alg"], "HS256");
        assert_eq!(part(&hs, 0)["kid"], key.kid());
        // A verifier that (wrongly) uses the PEM as an HMAC secret accepts it.
        let mut hs_validation = Validation::new(Algorithm::HS256);
        hs_validation.set_audience(&["client-1"]);
        let secret = DecodingKey::from_secret(key.public_key_pem().as_bytes());
        jsonwebtoken::decode::<Value>(&hs, &secret, &hs_validation).unwrap();
        assert!(verify(&key, &hs).is_err());

        let expired = mint(&key, &launch(Forgery::Expired));
        let now = chrono::Utc::now().timestamp();
        assert!(part(&expired, 1)["exp"].as_i64().unwrap() <= now - 3600);
        assert!(part(&expired, 1)["iat"].as_i64().unwrap() < now - 3600);
        assert_eq!(
            verify(&key, &expired).unwrap_err().kind(),
            &jsonwebtoken::errors::ErrorKind::ExpiredSignature
        );

        let patched = mint(
            &key,
            &launch(Forgery::Claims(json!({
                "aud": ["other"],
                "nonce": null,
                (format!("{LTI}version")): "1.1",
                (format!("{LTI}context")): {"title": "X"},
            }))),
        );
        let claims = part(&patched, 1);
        assert_eq!(claims["aud"], json!(["other"]));
        assert!(claims.get("nonce").is_none());
        assert_eq!(claims[format!("{LTI}version")], "1.1");
        assert_eq!(claims[format!("{LTI}context")], json!({"title": "X"}));
        assert!(verify(&key, &patched).is_err(), "wrong aud");

        let nonce = mint(&key, &launch(Forgery::Nonce("replayed".into())));
        assert_eq!(verify(&key, &nonce).unwrap()["nonce"], "replayed");

        let no_kid = mint(&key, &launch(Forgery::NoKid));
        assert!(part(&no_kid, 0).get("kid").is_none());
        assert!(verify(&key, &no_kid).is_ok(), "signed honestly");
    }

    #[test]
    fn merge_patch_follows_rfc_7396() {
        let mut target = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge_patch(&mut target, &json!({"a": "z", "c": {"f": null}}));
        assert_eq!(target, json!({"a": "z", "c": {"d": "e"}}));
        let mut target = json!({"a": [1]});
        merge_patch(&mut target, &json!({"a": {"b": "c"}, "n": [null]}));
        assert_eq!(target, json!({"a": {"b": "c"}, "n": [null]}));
    }
}
