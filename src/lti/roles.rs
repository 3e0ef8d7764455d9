//! LTI roles labpool acts on (LTI Core 1.3 §5.3.7, Appendix A.2). Only
//! exact role URIs count: a suffix test would let `https://x/#Instructor`
//! pass.

use serde_json::Value;

use super::verify::LaunchClaims;

/// The roles that may place labs in a course (Deep Linking) and are shown
/// how to set a link up: people who build or run the LMS course, and the
/// platform's administrators.
pub const PLACING_ROLES: &[&str] = &[
    // Context (membership) roles.
    "http://purl.imsglobal.org/vocab/lis/v2/membership#Instructor",
    "http://purl.imsglobal.org/vocab/lis/v2/membership#Administrator",
    "http://purl.imsglobal.org/vocab/lis/v2/membership#ContentDeveloper",
    // A sub-role of Instructor (Appendix A.2.3.1).
    "http://purl.imsglobal.org/vocab/lis/v2/membership/Instructor#TeachingAssistant",
    // Institution and system administrators.
    "http://purl.imsglobal.org/vocab/lis/v2/institution/person#Administrator",
    "http://purl.imsglobal.org/vocab/lis/v2/system/person#Administrator",
    "http://purl.imsglobal.org/vocab/lis/v2/system/person#SysAdmin",
    // The simple names LTI 1.3 still allows for context roles (§A.2.3.1,
    // deprecated).
    "Instructor",
    "Administrator",
    "ContentDeveloper",
];

/// Whether the launch's roles include one of [`PLACING_ROLES`].
pub fn may_place(claims: &LaunchClaims) -> bool {
    let Some(Value::Array(roles)) = &claims.roles else {
        return false;
    };
    roles
        .iter()
        .filter_map(Value::as_str)
        .any(|r| PLACING_ROLES.contains(&r))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(roles: Value) -> LaunchClaims {
        serde_json::from_value(serde_json::json!({
            "iss": "https://lms.example",
            "https://purl.imsglobal.org/spec/lti/claim/roles": roles,
        }))
        .unwrap()
    }

    #[test]
    fn only_exact_instructor_and_admin_roles_may_place() {
        let ok = [
            "http://purl.imsglobal.org/vocab/lis/v2/membership#Instructor",
            "http://purl.imsglobal.org/vocab/lis/v2/membership/Instructor#TeachingAssistant",
            "http://purl.imsglobal.org/vocab/lis/v2/system/person#Administrator",
            "Instructor",
        ];
        for role in ok {
            assert!(may_place(&claims(serde_json::json!([role]))), "{role}");
        }
        let no = [
            "http://purl.imsglobal.org/vocab/lis/v2/membership#Learner",
            "http://purl.imsglobal.org/vocab/lis/v2/institution/person#Student",
            "https://evil.example/#Instructor",
            "http://purl.imsglobal.org/vocab/lis/v2/membership#Mentor",
        ];
        for role in no {
            assert!(!may_place(&claims(serde_json::json!([role]))), "{role}");
        }
        assert!(!may_place(&claims(serde_json::json!("Instructor"))));
        assert!(!may_place(&claims(serde_json::json!([]))));
    }
}
