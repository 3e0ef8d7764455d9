//! LTI Dynamic Registration 1.0, platform side: the OpenID configuration the
//! platform publishes (§3.2–3.3) and the checks on the client metadata a
//! tool posts to the registration endpoint (§3.4–3.5).

use serde_json::{Value, json};

use super::launch::PRODUCT_FAMILY_CODE;

/// Key of the LTI block of the tool's registration request.
pub const TOOL_CONFIGURATION: &str = "https://purl.imsglobal.org/spec/lti-tool-configuration";
/// Key of the LTI block of the platform's configuration.
pub const PLATFORM_CONFIGURATION: &str =
    "https://purl.imsglobal.org/spec/lti-platform-configuration";

/// The platform's OpenID configuration for issuer `issuer`.
pub(crate) fn openid_configuration(issuer: &str) -> Value {
    json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/authorize"),
        "registration_endpoint": format!("{issuer}/register"),
        "jwks_uri": format!("{issuer}/jwks"),
        "token_endpoint": format!("{issuer}/token"),
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": ["RS256"],
        "scopes_supported": ["openid"],
        "response_types_supported": ["id_token"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "subject_types_supported": ["public"],
        "claims_supported": ["iss", "aud", "sub", "iat", "exp", "nonce", "azp", "name"],
        PLATFORM_CONFIGURATION: {
            "product_family_code": PRODUCT_FAMILY_CODE,
            "version": env!("CARGO_PKG_VERSION"),
            "messages_supported": [
                {"type": "LtiResourceLinkRequest"},
                {"type": "LtiDeepLinkingRequest"},
            ],
        },
    })
}

/// What the platform takes from an accepted registration request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ToolMetadata {
    pub login_url: String,
    pub redirect_uris: Vec<String>,
    pub jwks_url: String,
    pub target_link_uri: String,
    /// The `target_link_uri` of the tool's `LtiDeepLinkingRequest` message,
    /// when it declares one.
    pub deep_linking_target: Option<String>,
}

/// Checks a registration request body; the error is the
/// `error_description` of an `invalid_client_metadata` answer.
pub(crate) fn validate(body: &Value) -> Result<ToolMetadata, String> {
    let obj = body
        .as_object()
        .ok_or("the registration request must be a JSON object")?;
    let string = |name: &str| -> Result<&str, String> {
        obj.get(name)
            .and_then(Value::as_str)
            .ok_or_else(|| format!("`{name}` must be a string"))
    };
    let strings = |name: &str| -> Result<Vec<&str>, String> {
        obj.get(name)
            .and_then(Value::as_array)
            .and_then(|a| a.iter().map(Value::as_str).collect::<Option<Vec<_>>>())
            .ok_or_else(|| format!("`{name}` must be an array of strings"))
    };
    let url = |name: &str, value: &str| -> Result<(), String> {
        match url::Url::parse(value) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.fragment().is_none() => Ok(()),
            _ => Err(format!(
                "`{name}` must be an absolute http(s) URL without fragment, got {value:?}"
            )),
        }
    };

    if string("application_type")? != "web" {
        return Err("`application_type` must be \"web\"".into());
    }
    if !strings("response_types")?.contains(&"id_token") {
        return Err("`response_types` must contain \"id_token\"".into());
    }
    let grants = strings("grant_types")?;
    for grant in ["implicit", "client_credentials"] {
        if !grants.contains(&grant) {
            return Err(format!("`grant_types` must contain {grant:?}"));
        }
    }
    let login_url = string("initiate_login_uri")?;
    url("initiate_login_uri", login_url)?;
    let redirect_uris = strings("redirect_uris")?;
    if redirect_uris.is_empty() {
        return Err("`redirect_uris` must not be empty".into());
    }
    for uri in &redirect_uris {
        url("redirect_uris", uri)?;
    }
    let jwks_url = string("jwks_uri")?;
    url("jwks_uri", jwks_url)?;
    if string("token_endpoint_auth_method")? != "private_key_jwt" {
        return Err("`token_endpoint_auth_method` must be \"private_key_jwt\"".into());
    }
    string("scope")?;
    if let Some(name) = obj.get("client_name")
        && !name.is_string()
    {
        return Err("`client_name` must be a string".into());
    }

    let lti = obj
        .get(TOOL_CONFIGURATION)
        .and_then(Value::as_object)
        .ok_or_else(|| format!("`{TOOL_CONFIGURATION}` must be an object"))?;
    let domain = lti
        .get("domain")
        .and_then(Value::as_str)
        .filter(|d| !d.is_empty())
        .ok_or("the tool configuration's `domain` must be a non-empty string")?;
    if domain.contains("://") || domain.contains('/') {
        return Err(format!(
            "the tool configuration's `domain` is a host name, not a URL: {domain:?}"
        ));
    }
    let target_link_uri = lti
        .get("target_link_uri")
        .and_then(Value::as_str)
        .ok_or("the tool configuration's `target_link_uri` must be a string")?;
    url("target_link_uri", target_link_uri)?;
    let claims_ok = lti
        .get("claims")
        .and_then(Value::as_array)
        .is_some_and(|claims| claims.iter().all(Value::is_string));
    if !claims_ok {
        return Err("the tool configuration's `claims` must be an array of strings".into());
    }
    let messages = lti
        .get("messages")
        .and_then(Value::as_array)
        .ok_or("the tool configuration's `messages` must be an array")?;
    let mut deep_linking_target = None;
    for message in messages {
        let kind = message
            .get("type")
            .and_then(Value::as_str)
            .ok_or("each message of the tool configuration needs a string `type`")?;
        let target = match message.get("target_link_uri") {
            None => None,
            Some(Value::String(target)) => {
                url("messages[].target_link_uri", target)?;
                Some(target.clone())
            }
            Some(_) => return Err("a message's `target_link_uri` must be a string".into()),
        };
        if kind == "LtiDeepLinkingRequest" {
            deep_linking_target = target;
        }
    }

    Ok(ToolMetadata {
        login_url: login_url.to_owned(),
        redirect_uris: redirect_uris.into_iter().map(str::to_owned).collect(),
        jwks_url: jwks_url.to_owned(),
        target_link_uri: target_link_uri.to_owned(),
        deep_linking_target,
    })
}

#[cfg(test)]
pub(crate) fn sample_request() -> Value {
    json!({
        "application_type": "web",
        "response_types": ["id_token"],
        "grant_types": ["implicit", "client_credentials"],
        "initiate_login_uri": "https://tool.example/lti/login",
        "redirect_uris": ["https://tool.example/lti/launch"],
        "client_name": "labpool",
        "jwks_uri": "https://tool.example/lti/jwks",
        "token_endpoint_auth_method": "private_key_jwt",
        "scope": "",
        TOOL_CONFIGURATION: {
            "domain": "tool.example",
            "target_link_uri": "https://tool.example/lti/launch",
            "claims": ["iss", "sub", "name"],
            "messages": [
                {"type": "LtiResourceLinkRequest"},
                {"type": "LtiDeepLinkingRequest", "target_link_uri": "https://tool.example/lti/pick"},
            ],
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lms::launch::merge_patch;

    #[test]
    fn accepts_a_complete_request() {
        let metadata = validate(&sample_request()).unwrap();
        assert_eq!(metadata.login_url, "https://tool.example/lti/login");
        assert_eq!(metadata.redirect_uris, ["https://tool.example/lti/launch"]);
        assert_eq!(metadata.jwks_url, "https://tool.example/lti/jwks");
        assert_eq!(metadata.target_link_uri, "https://tool.example/lti/launch");
        assert_eq!(
            metadata.deep_linking_target.as_deref(),
            Some("https://tool.example/lti/pick")
        );
    }

    #[test]
    fn refuses_each_missing_or_wrong_member() {
        let cases = [
            (json!({"application_type": "native"}), "application_type"),
            (json!({"response_types": ["code"]}), "response_types"),
            (json!({"grant_types": ["implicit"]}), "client_credentials"),
            (json!({"initiate_login_uri": null}), "initiate_login_uri"),
            (
                json!({"initiate_login_uri": "/relative"}),
                "initiate_login_uri",
            ),
            (json!({"redirect_uris": []}), "redirect_uris"),
            (
                json!({"redirect_uris": "https://tool.example/x"}),
                "redirect_uris",
            ),
            (json!({"jwks_uri": null}), "jwks_uri"),
            (
                json!({"token_endpoint_auth_method": "client_secret_basic"}),
                "private_key_jwt",
            ),
            (json!({"scope": null}), "scope"),
            (json!({TOOL_CONFIGURATION: null}), TOOL_CONFIGURATION),
            (json!({TOOL_CONFIGURATION: {"domain": null}}), "domain"),
            (
                json!({TOOL_CONFIGURATION: {"domain": "https://tool.example"}}),
                "domain",
            ),
            (
                json!({TOOL_CONFIGURATION: {"target_link_uri": null}}),
                "target_link_uri",
            ),
            (json!({TOOL_CONFIGURATION: {"claims": null}}), "claims"),
            (json!({TOOL_CONFIGURATION: {"messages": {}}}), "messages"),
            (
                json!({TOOL_CONFIGURATION: {"messages": [{"label": "x"}]}}),
                "type",
            ),
        ];
        for (patch, expected) in cases {
            let mut request = sample_request();
            merge_patch(&mut request, &patch);
            let error = validate(&request).unwrap_err();
            assert!(error.contains(expected), "{patch}: {error}");
        }
        assert!(validate(&json!([])).is_err());
    }

    #[test]
    fn configuration_names_every_endpoint() {
        let config = openid_configuration("http://127.0.0.1:9");
        assert_eq!(config["issuer"], "http://127.0.0.1:9");
        assert_eq!(
            config["registration_endpoint"],
            "http://127.0.0.1:9/register"
        );
        assert_eq!(config["jwks_uri"], "http://127.0.0.1:9/jwks");
        assert_eq!(
            config[PLATFORM_CONFIGURATION]["messages_supported"][1]["type"],
            "LtiDeepLinkingRequest"
        );
        assert_eq!(
            config["id_token_signing_alg_values_supported"],
            json!(["RS256"])
        );
    }
}
