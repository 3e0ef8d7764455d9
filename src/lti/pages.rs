//! The HTML pages of a launch: plain, self-contained (no external assets),
//! every value escaped. Students see these inside their LMS.

use super::Refusal;
use super::deep_link::Picker;
use super::launch::{NeedsCourse, UserLimit};
use super::register::Registered;
use crate::html::Page;
use crate::html::escape;

/// A value inside a `<script>`: JSON, with `<` escaped so no `</script>`
/// can end the script early.
fn js(value: &str) -> String {
    serde_json::to_string(value)
        .expect("strings serialize")
        .replace('<', "\\u003c")
}

/// The style of the LTI pages, allowed by its hash (`http::headers`).
const STYLE: &str = "
body { font: 16px/1.5 system-ui, sans-serif; max-width: 42rem; margin: 3rem auto; padding: 0 1rem; color: #1d2433; }
h1 { font-size: 1.4rem; } code { background: #eef1f6; padding: 0 .25rem; border-radius: 3px; }
.note { color: #5a6478; font-size: .9rem; } button, .button { font: inherit; padding: .4rem 1rem; }
";

/// An LTI page: the common frame with the LTI pages' style.
pub fn page(title: &str, body: &str) -> String {
    crate::html::page(&Page {
        title,
        style: Some(STYLE),
        body,
        ..Page::default()
    })
}

pub fn refusal(r: &Refusal) -> String {
    let (title, advice) = match r.kind {
        "expired" => (
            "This launch has expired",
            "Go back to your course and open the lab again.",
        ),
        "replayed" => (
            "This launch was already used",
            "Each launch works once. Go back to your course and open the lab again.",
        ),
        "state" => (
            "Your browser did not keep this launch's cookie",
            "Browsers often block cookies inside an LMS page. Open the lab in a new window, or go back and launch again.",
        ),
        "unregistered" => (
            "This LMS is not registered with labpool",
            "Ask your labpool administrator to register this LMS (issuer, client id and deployment).",
        ),
        "platform-unreachable" => (
            "labpool cannot reach your LMS",
            "Try again in a minute; if it persists, tell your labpool administrator.",
        ),
        "internal" => (
            "Something went wrong on labpool's side",
            "Try again in a minute; if it persists, tell your labpool administrator.",
        ),
        _ => (
            "This launch was refused",
            "Go back to your course and open the lab again. If it keeps failing, tell your instructor.",
        ),
    };
    let retry = r
        .retry
        .as_deref()
        .map(|url| {
            format!(
                r#"<p><a class="button" href="{}" target="_blank" rel="opener">Open the lab in a new window</a></p>"#,
                escape(url)
            )
        })
        .unwrap_or_default();
    page(
        title,
        &format!(
            r#"<h1>{}</h1><p>{}</p>{retry}<p class="note">Reason: {}</p>"#,
            escape(title),
            escape(advice),
            escape(&r.reason)
        ),
    )
}

/// The page a launch waits on while its VM boots; it polls and moves on by
/// itself, and says so plainly when something is stuck.
pub fn waiting(ticket: &str, course: &str) -> String {
    let status_url = format!("/launch/wait/{ticket}/status");
    page(
        "Preparing your lab",
        &format!(
            r#"<h1>Preparing your lab</h1>
<p>{course}: all warm machines are taken, so a new one is starting for you. This page moves on by itself when it is ready.</p>
<p id="progress" aria-live="polite">Starting…</p>
<p class="note" id="problem"></p>
<script>
const statusUrl = {status_url};
const started = Date.now();
// The pass the launch gave this browser, in the fragment (never sent to a
// server): only it may poll. Kept for a reload of this tab, and taken out of
// the address bar.
const passKey = "labpool.wait." + location.pathname;
let pass = (/(?:^#|&)pass=([^&]+)/.exec(location.hash) || [])[1] || "";
try {{
  if (pass) sessionStorage.setItem(passKey, pass); else pass = sessionStorage.getItem(passKey) || "";
}} catch (e) {{}}
try {{ history.replaceState(null, "", location.pathname); }} catch (e) {{}}
async function poll() {{
  let next = 1500;
  try {{
    const r = await fetch(statusUrl, {{ cache: "no-store", headers: {{ "X-Labpool-Wait-Pass": decodeURIComponent(pass) }} }});
    const s = await r.json();
    if (s.state === "ready") {{ location.replace(s.url); return; }}
    if (s.state === "refused") {{
      document.getElementById("progress").textContent =
        "This wait belongs to another browser. Go back to your course and open the lab again.";
      return;
    }}
    if (s.state === "gone") {{
      document.getElementById("progress").textContent =
        "This wait has lapsed. Go back to your course and open the lab again.";
      return;
    }}
    const secs = Math.round((Date.now() - started) / 1000);
    document.getElementById("progress").textContent =
      (s.ahead > 0 ? s.ahead + " student(s) ahead of you; " : "") +
      s.booting + " machine(s) starting; waiting " + secs + " s.";
    document.getElementById("problem").textContent = s.problem ? "Problem: " + s.problem : "";
  }} catch (e) {{
    document.getElementById("problem").textContent = "Cannot reach labpool; retrying…";
    next = 4000;
  }}
  setTimeout(poll, next);
}}
poll();
</script>"#,
            course = escape(course),
            status_url = js(&status_url),
        ),
    )
}

pub fn full(title: &str) -> String {
    page(
        "The lab is full",
        &format!(
            "<h1>The lab is full</h1><p>Every machine of {} is in use. Try again in a few minutes.</p>",
            escape(title)
        ),
    )
}

/// The student already holds as many labs as allowed: which ones, and the
/// way back to the LMS.
pub fn user_limit(u: &UserLimit) -> String {
    let held = match u.held.as_slice() {
        [] => "another lab".to_owned(),
        titles => titles
            .iter()
            .map(|t| format!("<strong>{}</strong>", escape(t)))
            .collect::<Vec<_>>()
            .join(", "),
    };
    let back = u
        .return_url
        .as_deref()
        .map(|url| {
            format!(
                r#"<p><a href="{}">Back to your course</a></p>"#,
                escape(url)
            )
        })
        .unwrap_or_default();
    page(
        "You already have a lab",
        &format!(
            "<h1>You already have a lab</h1><p>You cannot open {} now: you already have {held} \
             open or on its way, and that is as many as you may have at once.</p>\
             <p>Go back to that lab from its link in your course, or end it there, then open \
             this one again.</p>{back}",
            escape(&u.title)
        ),
    )
}

pub fn needs_course(n: &NeedsCourse) -> String {
    let context = match (&n.context_title, &n.context_id) {
        (Some(t), Some(id)) => format!("{} (context id <code>{}</code>)", escape(t), escape(id)),
        (None, Some(id)) => format!("context id <code>{}</code>", escape(id)),
        _ => "this LMS course".into(),
    };
    let body = if n.instructor {
        let named = n
            .named
            .as_deref()
            .map(|c| {
                format!(
                    "<p>This link names the course <code>{}</code>, which labpool does not offer (any more).</p>",
                    escape(c)
                )
            })
            .unwrap_or_default();
        let offered = if n.courses.is_empty() {
            "labpool offers no courses yet.".to_owned()
        } else {
            format!(
                "Courses offered: {}.",
                n.courses
                    .iter()
                    .map(|c| format!("<code>{}</code>", escape(c)))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        format!(
            r#"<h1>This link is not connected to a lab yet</h1>{named}
<p>Do one of these:</p>
<ol>
<li>Edit the assignment and choose the lab with the LMS's content picker (Deep Linking). A course name typed into the link's custom parameters is not enough: labpool opens only the placements its picker signed.</li>
<li>Or add {context} to the course file, with this LMS as a platform that may launch it: <code>lti: {{ platforms: [{{ issuer: "{issuer}" }}], contexts: ["{id}"] }}</code>, and merge it.</li>
</ol>
<p class="note">{offered}</p>"#,
            id = escape(n.context_id.as_deref().unwrap_or("<context id>")),
            issuer = escape(&n.issuer),
        )
    } else {
        "<h1>This lab is not set up yet</h1><p>Your instructor has not connected this link to a lab. Please let them know.</p>".to_owned()
    };
    page("Lab not configured", &body)
}

/// Asks the platform's storage frame for the value the login put there, and
/// posts the launch again with it (LTI client-side postMessages, for
/// browsers that block our cookie in the LMS's iframe).
pub fn storage_check(target: &str, state: &str, id_token: &str, platform_origin: &str) -> String {
    page(
        "Opening your lab",
        &format!(
            r#"<p id="msg">Opening your lab…</p>
<form id="again" method="post" action="/lti/launch">
<input type="hidden" name="id_token" value="{id_token}">
<input type="hidden" name="state" value="{state}">
<input type="hidden" name="storage_secret" value="">
</form>
<script>
const target = {target_js}, key = "labpool_" + {state_js}, origin = {origin_js};
const frame = (window.parent.frames && window.parent.frames[target]) || window.parent;
const id = Math.random().toString(36).slice(2);
window.addEventListener("message", (e) => {{
  const d = e.data || {{}};
  if (d.subject !== "lti.get_data.response" || d.message_id !== id) return;
  if (!d.value) {{ document.getElementById("msg").textContent = "This browser did not start this launch; go back and launch again."; return; }}
  document.querySelector("[name=storage_secret]").value = d.value;
  document.getElementById("again").submit();
}});
frame.postMessage({{ subject: "lti.get_data", message_id: id, key }}, origin || "*");
setTimeout(() => {{ document.getElementById("msg").textContent = "Your LMS did not answer; open the lab in a new window."; }}, 5000);
</script>"#,
            id_token = escape(id_token),
            state = escape(state),
            target_js = js(target),
            state_js = js(state),
            origin_js = js(platform_origin),
        ),
    )
}

/// The login's answer when the platform offers storage: put the secret
/// there, then go on to the platform (the cookie is set too).
pub fn login_storage(
    target: &str,
    state: &str,
    secret: &str,
    platform_origin: &str,
    redirect: &str,
) -> String {
    page(
        "Opening your lab",
        &format!(
            r#"<p>Opening your lab…</p>
<script>
const target = {target}, key = "labpool_" + {state}, value = {secret}, origin = {origin}, next = {next};
const frame = (window.parent.frames && window.parent.frames[target]) || window.parent;
const id = Math.random().toString(36).slice(2);
let gone = false;
const go = () => {{ if (!gone) {{ gone = true; location.replace(next); }} }};
window.addEventListener("message", (e) => {{
  const d = e.data || {{}};
  if (d.subject === "lti.put_data.response" && d.message_id === id) go();
}});
frame.postMessage({{ subject: "lti.put_data", message_id: id, key, value }}, origin || "*");
setTimeout(go, 2000);
</script>
<noscript><a href="{next_attr}">Continue</a></noscript>"#,
            target = js(target),
            state = js(state),
            secret = js(secret),
            origin = js(platform_origin),
            next = js(redirect),
            next_attr = escape(redirect),
        ),
    )
}

pub fn picker(p: &Picker) -> String {
    let options: String = p
        .courses
        .iter()
        .enumerate()
        .map(|(i, (name, title))| {
            format!(
                r#"<p><label><input type="radio" name="course" value="{name}"{checked}> {title} <code>{name}</code></label></p>"#,
                name = escape(name),
                title = escape(title),
                checked = if i == 0 { " checked" } else { "" },
            )
        })
        .collect();
    let body = if p.courses.is_empty() {
        "<h1>No labs to choose from</h1><p>No course may be launched from this LMS: labpool offers none yet, or no course file names this platform under <code>lti.platforms</code>.</p>".to_owned()
    } else {
        format!(
            r#"<h1>Choose a lab{for_context}</h1>
<form method="post" action="/lti/deep-link">
<input type="hidden" name="request" value="{request}">
{options}
<p><button type="submit">Add this lab</button></p>
</form>"#,
            for_context = p
                .context_title
                .as_deref()
                .map(|t| format!(" for {}", escape(t)))
                .unwrap_or_default(),
            request = escape(&p.request),
        )
    };
    page("Choose a lab", &body)
}

/// A form the browser posts at once (a real browser by script; test user
/// agents recognise `data-autosubmit`).
pub fn auto_post(action: &str, fields: &[(&str, &str)]) -> String {
    let inputs: String = fields
        .iter()
        .map(|(name, value)| {
            format!(
                r#"<input type="hidden" name="{}" value="{}">"#,
                escape(name),
                escape(value)
            )
        })
        .collect();
    page(
        "Continuing…",
        &format!(
            r#"<form id="autopost" method="post" action="{}" data-autosubmit>{inputs}<noscript><button type="submit">Continue</button></noscript></form>
<script>document.getElementById("autopost").submit();</script>"#,
            escape(action)
        ),
    )
}

/// A refused Dynamic Registration: the reason labpool decided on (never
/// anything the remote side sent; see `register::UNREACHABLE`).
pub fn registration_refused(r: &Refusal) -> String {
    page(
        "Registration refused",
        &format!(
            r#"<h1>labpool did not register this LMS</h1><p id="reason">{}</p>"#,
            escape(&r.reason)
        ),
    )
}

pub fn registered(r: &Registered) -> String {
    page(
        "labpool registered",
        &format!(
            r#"<h1>labpool is registered</h1>
<p>{product}issuer <code>{issuer}</code>, client id <code>{client}</code>{deployment}.</p>
<p>Enable the tool in your LMS; courses then add labs with the content picker.</p>
<script>(window.opener || window.parent).postMessage({{ subject: "org.imsglobal.lti.close" }}, "*");</script>"#,
            product = r
                .product
                .as_deref()
                .map(|p| format!("{}: ", escape(p)))
                .unwrap_or_default(),
            issuer = escape(&r.issuer),
            client = escape(&r.client_id),
            deployment = r
                .deployment_id
                .as_deref()
                .map(|d| format!(", deployment <code>{}</code>", escape(d)))
                .unwrap_or_default(),
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_cannot_break_out_of_html_or_script() {
        assert_eq!(
            escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(js("</script><b>"), r#""\u003c/script>\u003cb>""#);
        let page = waiting("t1", "<img src=x>");
        assert!(page.contains("&lt;img src=x&gt;"));
        assert!(!page.contains("<img"));
    }
}
