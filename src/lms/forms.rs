//! A small HTML form reader and escaper.
//!
//! LTI moves its tokens through the browser as auto-submitting forms (the
//! platform's id_token post, the tool's deep-linking response). The test
//! [`Browser`](super::Browser) has no JavaScript, so it finds those forms
//! itself: this reader understands just enough HTML for well-formed pages
//! (start tags with attributes in either quote style, the common character
//! references), which is what both sides of this crate emit.

/// One `<form>` of a page, with what a browser would submit from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Form {
    /// The `id` attribute, if any.
    pub id: Option<String>,
    /// `method`, lower-cased; `get` when absent (the HTML default).
    pub method: String,
    /// `action` as written (unescaped); empty when absent.
    pub action: String,
    /// Whether the form carries `data-autosubmit`, the marker this crate
    /// puts on forms that a script submits on load.
    pub autosubmit: bool,
    /// The successful controls, in document order: `<input>`s with a name
    /// (not buttons or files; checkboxes and radios only when checked) and
    /// `<textarea>`s.
    pub fields: Vec<(String, String)>,
}

impl Form {
    /// The value of the first field called `name`.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Every form of `html`, in document order.
pub fn parse_forms(html: &str) -> Vec<Form> {
    let mut forms = Vec::new();
    let mut current: Option<Form> = None;
    let mut rest = html;
    while let Some(lt) = rest.find('<') {
        rest = &rest[lt..];
        if rest.starts_with("<!--") {
            rest = match rest.find("-->") {
                Some(end) => &rest[end + 3..],
                None => "",
            };
            continue;
        }
        let Some(tag) = read_tag(rest) else {
            rest = &rest[1..];
            continue;
        };
        rest = &rest[tag.len..];
        match (tag.closing, tag.name.as_str()) {
            (false, "form") => {
                // Forms do not nest; an unclosed one ends where the next begins.
                forms.extend(current.take());
                current = Some(Form {
                    id: tag.attr("id").map(str::to_owned),
                    method: tag.attr("method").unwrap_or("get").to_ascii_lowercase(),
                    action: tag.attr("action").unwrap_or_default().to_owned(),
                    autosubmit: tag.attr("data-autosubmit").is_some(),
                    fields: Vec::new(),
                });
            }
            (true, "form") => forms.extend(current.take()),
            (false, "input") => {
                if let (Some(form), Some(name)) = (current.as_mut(), tag.attr("name")) {
                    let kind = tag.attr("type").unwrap_or("text").to_ascii_lowercase();
                    let checked = tag.attr("checked").is_some();
                    let submitted = match kind.as_str() {
                        "submit" | "button" | "reset" | "image" | "file" => false,
                        "checkbox" | "radio" => checked,
                        _ => true,
                    };
                    if submitted {
                        let default = if kind == "checkbox" || kind == "radio" {
                            "on"
                        } else {
                            ""
                        };
                        let value = tag.attr("value").unwrap_or(default);
                        form.fields.push((name.to_owned(), value.to_owned()));
                    }
                }
            }
            (false, "textarea") => {
                let end = rest.find("</textarea").unwrap_or(rest.len());
                if let (Some(form), Some(name)) = (current.as_mut(), tag.attr("name")) {
                    form.fields
                        .push((name.to_owned(), unescape_html(&rest[..end])));
                }
                rest = &rest[end..];
            }
            (false, "script" | "style") => {
                // Raw text: skip to the end tag so `<` inside is not a tag.
                let close = format!("</{}", tag.name);
                let end = find_ascii_ci(rest, &close).unwrap_or(rest.len());
                rest = &rest[end..];
            }
            _ => {}
        }
    }
    forms.extend(current.take());
    forms
}

/// Escapes text for an HTML attribute value or element content: the same
/// escaping the tool's pages use.
pub use crate::html::escape as escape_html;

/// Replaces the character references HTML writers commonly emit: the named
/// `&amp; &quot; &apos; &lt; &gt;` and numeric `&#NN;` / `&#xHH;`. Anything
/// else is left as written.
pub fn unescape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let semi = rest.bytes().take(12).position(|b| b == b';');
        let decoded = semi.and_then(|semi| {
            let entity = &rest[1..semi];
            let c = match entity {
                "amp" => Some('&'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                "lt" => Some('<'),
                "gt" => Some('>'),
                _ => {
                    let number = entity.strip_prefix('#')?;
                    let code = match number.strip_prefix(['x', 'X']) {
                        Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                        None => number.parse().ok()?,
                    };
                    char::from_u32(code)
                }
            };
            c.map(|c| (c, semi + 1))
        });
        match decoded {
            Some((c, len)) => {
                out.push(c);
                rest = &rest[len..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// A start or end tag read from the beginning of some HTML.
struct Tag {
    name: String,
    closing: bool,
    attrs: Vec<(String, Option<String>)>,
    /// Bytes of input the tag spans, `<` to `>` inclusive.
    len: usize,
}

impl Tag {
    /// An attribute's value: `Some("")` for a bare attribute.
    fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_deref().unwrap_or(""))
    }
}

/// Reads the tag at the start of `input` (which begins with `<`); `None` when
/// it is not a tag (a lone `<`, a doctype, a processing instruction).
fn read_tag(input: &str) -> Option<Tag> {
    let bytes = input.as_bytes();
    let mut i = 1;
    let closing = bytes.get(i) == Some(&b'/');
    if closing {
        i += 1;
    }
    let name_start = i;
    while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'-') {
        i += 1;
    }
    if i == name_start {
        return None;
    }
    let name = input[name_start..i].to_ascii_lowercase();
    let mut attrs = Vec::new();
    loop {
        while i < bytes.len() && (bytes[i].is_ascii_whitespace() || bytes[i] == b'/') {
            i += 1;
        }
        match bytes.get(i) {
            None => return None,
            Some(b'>') => {
                return Some(Tag {
                    name,
                    closing,
                    attrs,
                    len: i + 1,
                });
            }
            Some(_) => {}
        }
        let attr_start = i;
        while i < bytes.len()
            && !bytes[i].is_ascii_whitespace()
            && !matches!(bytes[i], b'=' | b'>' | b'/')
        {
            i += 1;
        }
        let attr = input[attr_start..i].to_ascii_lowercase();
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if bytes.get(i) != Some(&b'=') {
            attrs.push((attr, None));
            continue;
        }
        i += 1;
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let value = match bytes.get(i) {
            Some(&quote @ (b'"' | b'\'')) => {
                let end = i + 1 + input[i + 1..].find(quote as char)?;
                let value = &input[i + 1..end];
                i = end + 1;
                value
            }
            _ => {
                let start = i;
                while i < bytes.len() && !bytes[i].is_ascii_whitespace() && bytes[i] != b'>' {
                    i += 1;
                }
                &input[start..i]
            }
        };
        attrs.push((attr, Some(unescape_html(value))));
    }
}

/// Byte offset of `needle` (ASCII) in `haystack`, ignoring ASCII case.
fn find_ascii_ci(haystack: &str, needle: &str) -> Option<usize> {
    haystack
        .as_bytes()
        .windows(needle.len())
        .position(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_an_autosubmit_form_with_both_quote_styles() {
        let html = r#"<!doctype html><html><body>
            <form id="lti" method="POST" action='https://tool.example/launch?a=1&amp;b=2' data-autosubmit>
              <input type="hidden" name="id_token" value="a.b.c">
              <input type=hidden name='state' value='s&quot;1&#39;&lt;&gt;'/>
              <input type="submit" name="go" value="Continue">
            </form>
            <script>document.getElementById('lti').submit(); if (1 < 2) {}</script>
            </body></html>"#;
        let forms = parse_forms(html);
        assert_eq!(forms.len(), 1);
        let form = &forms[0];
        assert_eq!(form.id.as_deref(), Some("lti"));
        assert_eq!(form.method, "post");
        assert_eq!(form.action, "https://tool.example/launch?a=1&b=2");
        assert!(form.autosubmit);
        assert_eq!(
            form.fields,
            vec![
                ("id_token".to_owned(), "a.b.c".to_owned()),
                ("state".to_owned(), "s\"1'<>".to_owned()),
            ]
        );
        assert_eq!(form.field("state"), Some("s\"1'<>"));
    }

    #[test]
    fn several_forms_defaults_and_controls() {
        let html = r#"<form action="/a"><input name="q" value="x"><input type="checkbox" name="c">
            <input type="checkbox" name="d" checked><textarea name="t">1 &lt; 2</textarea></form>
            <!-- <form action="/commented"></form> -->
            <form method="post" action="/b"><input name="n"></form>"#;
        let forms = parse_forms(html);
        assert_eq!(forms.len(), 2);
        assert_eq!(forms[0].method, "get");
        assert!(!forms[0].autosubmit);
        assert_eq!(
            forms[0].fields,
            vec![
                ("q".to_owned(), "x".to_owned()),
                ("d".to_owned(), "on".to_owned()),
                ("t".to_owned(), "1 < 2".to_owned()),
            ]
        );
        assert_eq!(forms[1].action, "/b");
        assert_eq!(forms[1].fields, vec![("n".to_owned(), String::new())]);
    }

    #[test]
    fn escaping_round_trips() {
        let text = r#"<a href="x">it's & done</a>"#;
        let escaped = escape_html(text);
        assert!(!escaped.contains(['<', '>', '"', '\'']));
        assert_eq!(unescape_html(&escaped), text);
        assert_eq!(unescape_html("&#x41;&#66;&unknown;&"), "AB&unknown;&");
    }

    #[test]
    fn tolerates_broken_markup() {
        assert!(parse_forms("a < b <form").is_empty());
        let forms = parse_forms("<form action=/x><input name=a value=1><form action=/y>");
        assert_eq!(forms.len(), 2);
        assert_eq!(forms[0].action, "/x");
        assert_eq!(forms[0].field("a"), Some("1"));
    }
}
