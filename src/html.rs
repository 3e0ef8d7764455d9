//! The markup labpool writes itself: one escape for text and quoted
//! attribute values (HTML pages and the XML handed to libvirt alike), and
//! one frame for every HTML page (doctype, head, viewport, title, an inline
//! style sheet). Pages differ only in what they put into the frame.

/// Escapes text for element content and quoted attribute values, in HTML
/// and in XML: `&`, `<`, `>`, `"` and `'` (as `&#39;`, which both read).
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// One page for [`page`]. Everything but the title is markup from a
/// template (values in it already escaped): a `<style>` or `<script>` can
/// only come from labpool, which is what the CSP hashes of
/// `http::headers` rely on.
#[derive(Debug, Clone, Copy, Default)]
pub struct Page<'a> {
    /// Plain text; escaped here.
    pub title: &'a str,
    /// More of the head, after the viewport (a refresh, a referrer policy,
    /// style sheet links).
    pub head: &'a str,
    /// The inline style sheet, written between `<style>` and `</style>` as
    /// it is (a policy may allow it by its hash).
    pub style: Option<&'a str>,
    /// Attributes of `<body>`, each with its leading space.
    pub body_attributes: &'a str,
    pub body: &'a str,
}

/// The whole document of `p`.
pub fn page(p: &Page<'_>) -> String {
    let style = p
        .style
        .map(|css| format!("<style>{css}</style>"))
        .unwrap_or_default();
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">{head}\n\
         <title>{title}</title>\n{style}</head>\n<body{attributes}>\n{body}\n</body></html>\n",
        head = p.head,
        title = escape(p.title),
        attributes = p.body_attributes,
        body = p.body,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_covers_text_and_both_quotes() {
        assert_eq!(
            escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(escape("plain é"), "plain é");
    }

    #[test]
    fn the_frame_escapes_the_title_and_keeps_the_style_as_written() {
        let html = page(&Page {
            title: "<T>",
            head: "\n<meta name=\"referrer\" content=\"no-referrer\">",
            style: Some("\nbody { x: 1 }\n"),
            body_attributes: " data-x=\"1\"",
            body: "<p>hi</p>",
        });
        assert!(
            html.starts_with("<!doctype html>\n<html lang=\"en\">"),
            "{html}"
        );
        assert!(html.contains("<title>&lt;T&gt;</title>"), "{html}");
        assert!(
            html.contains("initial-scale=1\">\n<meta name=\"referrer\""),
            "{html}"
        );
        assert!(
            html.contains("<style>\nbody { x: 1 }\n</style></head>"),
            "{html}"
        );
        assert!(
            html.ends_with("<body data-x=\"1\">\n<p>hi</p>\n</body></html>\n"),
            "{html}"
        );
        let bare = page(&Page {
            title: "t",
            ..Page::default()
        });
        assert!(!bare.contains("<style"), "{bare}");
        assert!(
            bare.contains("<title>t</title>\n</head>\n<body>\n"),
            "{bare}"
        );
    }
}
