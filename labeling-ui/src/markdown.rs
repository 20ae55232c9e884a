//! Untrusted markdown (model responses, prompts, guidelines) → HTML safe for `innerHTML`: tables
//! and strikethrough on, rendered by pulldown-cmark after an event pass that removes every way for
//! the text to run script or load anything.
//!
//! What the pass does, following research/labeling.md §3.3 (and the Label Studio / Argilla
//! advisories in §2 rows 9–10):
//! - raw HTML, block and inline, becomes escaped text (a block of it is shown as code);
//! - images become text, their alt text and URL, never an `<img>`;
//! - links keep their `<a>` only for `http`, `https`, `mailto` and relative or fragment URLs, and
//!   get `rel="noopener noreferrer nofollow"`; any other link becomes its text plus the URL as text;
//! - a fenced code block keeps `class="language-x"` only when `x` is `[A-Za-z0-9_+-]+`;
//! - table alignment is dropped, because it is written as a `style` attribute that the page's CSP
//!   (`style-src 'self'`) refuses.
//!
//! The scheme check mirrors how browsers read an `href`: leading and trailing spaces and controls
//! are ignored and tabs and newlines anywhere are removed, so `java\tscript:` and ` JAVASCRIPT:`
//! are caught. It removes every ASCII control and whitespace character before comparing, which
//! rejects a few URLs a browser would read as relative paths; that errs on the safe side.

use pulldown_cmark::{
    Alignment, CodeBlockKind, CowStr, Event, LinkType, Options, Parser, Tag, TagEnd, html,
};

/// The `rel` of every link kept: no window handle, no referrer, no endorsement for crawlers.
const LINK_REL: &str = "noopener noreferrer nofollow";

/// URL schemes a kept link may have (compared in lower case).
const ALLOWED_SCHEMES: [&str; 3] = ["http", "https", "mailto"];

/// Renders untrusted markdown to HTML that is safe to insert with `innerHTML`.
#[must_use]
pub fn render_markdown(text: &str) -> String {
    let parser = Parser::new_ext(text, Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH);
    let mut neutralizer = Neutralizer::default();
    let events = parser.filter_map(|event| neutralizer.rewrite(event));
    let mut out = String::with_capacity(text.len() + text.len() / 2);
    html::push_html(&mut out, events);
    out
}

/// How a link's start was rendered, so that its end matches.
#[derive(Debug)]
enum OpenLink {
    /// Written as our own `<a …>`: close it with `</a>`.
    Anchor,
    /// Dropped: the label stays as text, then this text (the URL, or nothing for autolinks whose
    /// label already is the URL).
    Text(String),
}

/// The state of the event pass: open links and images.
#[derive(Debug, Default)]
struct Neutralizer {
    links: Vec<OpenLink>,
    /// The URLs of the images we are inside (an image's alt text may hold another image).
    images: Vec<String>,
}

impl Neutralizer {
    /// One parser event → the event to render instead (`None` drops it).
    fn rewrite<'a>(&mut self, event: Event<'a>) -> Option<Event<'a>> {
        if !self.images.is_empty() {
            return self.rewrite_in_image(event);
        }
        match event {
            Event::Html(html) | Event::InlineHtml(html) => Some(Event::Text(html)),
            // A block of raw HTML is shown as what it is: code.
            Event::Start(Tag::HtmlBlock) => {
                Some(Event::Start(Tag::CodeBlock(CodeBlockKind::Indented)))
            }
            Event::End(TagEnd::HtmlBlock) => Some(Event::End(TagEnd::CodeBlock)),
            Event::Start(Tag::CodeBlock(CodeBlockKind::Fenced(info))) => {
                let language = info.split_whitespace().next().unwrap_or("");
                let language = if is_language_name(language) {
                    language
                } else {
                    ""
                };
                Some(Event::Start(Tag::CodeBlock(CodeBlockKind::Fenced(
                    CowStr::from(language.to_owned()),
                ))))
            }
            Event::Start(Tag::Table(alignments)) => Some(Event::Start(Tag::Table(vec![
                Alignment::None;
                alignments.len()
            ]))),
            Event::Start(Tag::Link {
                link_type,
                dest_url,
                title,
                ..
            }) => self.open_link(link_type, &dest_url, &title),
            Event::End(TagEnd::Link) => match self.links.pop() {
                Some(OpenLink::Anchor) => Some(Event::InlineHtml(CowStr::Borrowed("</a>"))),
                Some(OpenLink::Text(suffix)) if !suffix.is_empty() => {
                    Some(Event::Text(suffix.into()))
                }
                Some(OpenLink::Text(_)) | None => None,
            },
            Event::Start(Tag::Image { dest_url, .. }) => {
                self.images.push(dest_url.into_string());
                Some(Event::Text(CowStr::Borrowed("[image: ")))
            }
            other => Some(other),
        }
    }

    /// Inside an image only its text survives; the image's end writes its URL.
    fn rewrite_in_image<'a>(&mut self, event: Event<'a>) -> Option<Event<'a>> {
        match event {
            Event::Text(text) | Event::Code(text) | Event::Html(text) | Event::InlineHtml(text) => {
                Some(Event::Text(text))
            }
            Event::SoftBreak | Event::HardBreak => Some(Event::Text(CowStr::Borrowed(" "))),
            Event::Start(Tag::Image { dest_url, .. }) => {
                self.images.push(dest_url.into_string());
                Some(Event::Text(CowStr::Borrowed("[image: ")))
            }
            Event::End(TagEnd::Image) => {
                let url = self.images.pop().unwrap_or_default();
                Some(Event::Text(format!(" — {url}]").into()))
            }
            _ => None,
        }
    }

    /// The start of a link: our own `<a>` when the URL is allowed, else nothing (the label
    /// follows as text and the link's end writes the URL).
    fn open_link<'a>(
        &mut self,
        link_type: LinkType,
        dest_url: &str,
        title: &str,
    ) -> Option<Event<'a>> {
        let href = if link_type == LinkType::Email {
            format!("mailto:{dest_url}")
        } else {
            dest_url.to_owned()
        };
        if !is_allowed_url(&href) {
            let label_is_url = matches!(link_type, LinkType::Autolink | LinkType::Email);
            let suffix = if label_is_url {
                String::new()
            } else {
                format!(" ({dest_url})")
            };
            self.links.push(OpenLink::Text(suffix));
            return None;
        }
        self.links.push(OpenLink::Anchor);
        let mut tag = String::from("<a href=\"");
        // Browsers ignore leading and trailing spaces and controls; encoded, they would not.
        push_href(
            &mut tag,
            href.trim_matches(|c: char| c.is_ascii_control() || c.is_ascii_whitespace()),
        );
        if !title.is_empty() {
            tag.push_str("\" title=\"");
            push_attribute_value(&mut tag, title);
        }
        tag.push_str("\" rel=\"");
        tag.push_str(LINK_REL);
        tag.push_str("\">");
        Some(Event::InlineHtml(tag.into()))
    }
}

/// Whether a link destination may become an `href`: a relative or fragment URL, or one whose
/// scheme is in [`ALLOWED_SCHEMES`].
fn is_allowed_url(url: &str) -> bool {
    let cleaned: String = url
        .chars()
        .filter(|c| !c.is_ascii_control() && !c.is_ascii_whitespace())
        .collect();
    // A scheme is whatever precedes a `:` that comes before any `/`, `?` or `#`; without one the
    // URL is relative. Unusual characters in the would-be scheme do not make it relative here.
    match cleaned.find([':', '/', '?', '#']) {
        Some(index) if cleaned[index..].starts_with(':') => {
            let scheme = cleaned[..index].to_ascii_lowercase();
            ALLOWED_SCHEMES.contains(&scheme.as_str())
        }
        _ => true,
    }
}

/// Whether a fenced block's language may become a class: `[A-Za-z0-9_+-]+`.
fn is_language_name(language: &str) -> bool {
    !language.is_empty()
        && language
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'+' | b'-'))
}

/// Appends `value` escaped for a double-quoted attribute.
fn push_attribute_value(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
}

/// Appends a URL for a double-quoted `href`: ASCII controls and spaces percent-encoded (so the
/// browser cannot drop them and read another scheme than [`is_allowed_url`] checked), then
/// escaped as any attribute value.
fn push_href(out: &mut String, url: &str) {
    let mut encoded = String::with_capacity(url.len());
    for c in url.chars() {
        if c.is_ascii_control() || c == ' ' {
            let code = u32::from(c);
            encoded.push('%');
            for digit in [code >> 4, code & 0xF] {
                encoded.push(char::from_digit(digit, 16).map_or('0', |d| d.to_ascii_uppercase()));
            }
        } else {
            encoded.push(c);
        }
    }
    push_attribute_value(out, &encoded);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One start tag of the output: its name and attributes (values with our entities decoded).
    #[derive(Debug)]
    struct StartTag {
        name: String,
        attributes: Vec<(String, String)>,
    }

    /// Reads every tag of `html`. Text is escaped by the renderer, so every `<` starts a tag;
    /// attribute values are always double-quoted.
    fn tags(html: &str) -> Vec<StartTag> {
        let mut found = Vec::new();
        let mut rest = html;
        while let Some(open) = rest.find('<') {
            let after = &rest[open + 1..];
            let close = after
                .find('>')
                .unwrap_or_else(|| panic!("unclosed tag in {html}"));
            let inner = &after[..close];
            rest = &after[close + 1..];
            if inner.starts_with('/') {
                continue;
            }
            let inner = inner.trim_end_matches('/').trim_end();
            let name_end = inner.find(char::is_whitespace).unwrap_or(inner.len());
            let name = inner[..name_end].to_ascii_lowercase();
            let mut attributes = Vec::new();
            let mut cursor = inner[name_end..].trim_start();
            while !cursor.is_empty() {
                let attr_end = cursor.find(['=', ' ']).unwrap_or(cursor.len());
                let attr = cursor[..attr_end].to_ascii_lowercase();
                cursor = &cursor[attr_end..];
                let mut value = String::new();
                if let Some(quoted) = cursor.strip_prefix("=\"") {
                    let end = quoted
                        .find('"')
                        .unwrap_or_else(|| panic!("unquoted value in {html}"));
                    value = quoted[..end]
                        .replace("&quot;", "\"")
                        .replace("&#39;", "'")
                        .replace("&lt;", "<")
                        .replace("&gt;", ">")
                        .replace("&amp;", "&");
                    cursor = &quoted[end + 1..];
                } else {
                    assert!(
                        !cursor.starts_with('='),
                        "unquoted attribute value in {html}"
                    );
                }
                attributes.push((attr, value));
                cursor = cursor.trim_start();
            }
            found.push(StartTag { name, attributes });
        }
        found
    }

    /// The tags and attributes the renderer may write; anything else fails the corpus.
    const ALLOWED_TAGS: [&str; 23] = [
        "p",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "ul",
        "ol",
        "li",
        "a",
        "code",
        "pre",
        "em",
        "strong",
        "del",
        "blockquote",
        "table",
        "thead",
        "tbody",
        "tr",
        "th",
        "td",
    ];
    const ALLOWED_ATTRIBUTES: [&str; 5] = ["href", "title", "rel", "class", "start"];

    /// Asserts that `html` can neither run script nor load anything.
    fn assert_inert(source: &str, html: &str) {
        let lower = html.to_ascii_lowercase();
        for forbidden in [
            "<script", "<img", "<svg", "<iframe", "<object", "<embed", "<style",
        ] {
            assert!(
                !lower.contains(forbidden),
                "{forbidden} in {html:?} (from {source:?})"
            );
        }
        for tag in tags(html) {
            assert!(
                ALLOWED_TAGS.contains(&tag.name.as_str()) || tag.name == "hr" || tag.name == "br",
                "tag <{}> in {html:?} (from {source:?})",
                tag.name
            );
            for (attr, value) in &tag.attributes {
                assert!(
                    !attr.starts_with("on"),
                    "event handler {attr} in {html:?} (from {source:?})"
                );
                assert!(
                    ALLOWED_ATTRIBUTES.contains(&attr.as_str()),
                    "attribute {attr} in {html:?} (from {source:?})"
                );
                if attr == "href" {
                    let squashed: String = value
                        .chars()
                        .filter(|c| !c.is_ascii_control() && !c.is_ascii_whitespace())
                        .collect::<String>()
                        .to_ascii_lowercase();
                    for scheme in ["javascript:", "data:", "vbscript:", "file:"] {
                        assert!(
                            !squashed.contains(scheme),
                            "href {value:?} in {html:?} (from {source:?})"
                        );
                    }
                    assert!(
                        tag.attributes
                            .iter()
                            .any(|(a, v)| a == "rel" && v == LINK_REL)
                    );
                }
                if attr == "class" {
                    assert!(
                        value.starts_with("language-"),
                        "class {value:?} in {html:?}"
                    );
                }
            }
        }
    }

    const XSS_CORPUS: &[&str] = &[
        "<script>alert(1)</script>",
        "text <script>alert(1)</script> more",
        "<img src=x onerror=alert(1)>",
        "inline <img src=x onerror=alert(1)> image",
        "[x](javascript:alert(1))",
        "[x](JaVaScRiPt:alert(1))",
        "[x](java&#x09;script:alert(1))",
        "[x](java&#9;script:alert(1))",
        "[x](<java script:alert(1)>)",
        "[x]( \tjavascript:alert(1))",
        "[x](&#x6A;avascript:alert(1))",
        "[x](javascript&colon;alert(1))",
        "[x](vbscript:msgbox(1))",
        "[x](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
        "[x](DATA:text/html,<script>alert(1)</script>)",
        "[x][ref]\n\n[ref]: javascript:alert(1)",
        "[ref]\n\n[ref]: javascript:alert(1) \"title\"",
        "<svg onload=alert(1)>",
        "a <svg/onload=alert(1)> b",
        "<object data=\"data:text/html,<script>alert(1)</script>\"></object>",
        "<iframe src=\"javascript:alert(1)\"></iframe>",
        "x <iframe srcdoc=\"<script>alert(1)</script>\"></iframe>",
        "![x](javascript:alert(1))",
        "![x](https://example.com/a.png)",
        "![x\" onerror=\"alert(1)](https://example.com/a.png)",
        "![![inner](javascript:1)](https://example.com/outer.png)",
        "[![x](https://e.com/i.png)](javascript:alert(1))",
        "<javascript:alert(1)>",
        "<JAVASCRIPT:alert(1)>",
        "<data:text/html,alert(1)>",
        "`\"><script>alert(1)</script>`",
        "[x](https://example.com \"\\\"><script>alert(1)</script>\")",
        "[x](https://example.com '\" onmouseover=\"alert(1)')",
        "<a\nhref=x\nonclick=alert(1)>split</a>",
        "text <a\nhref=\"javascript:alert(1)\">split</a>",
        "<a href=\"javascript:alert(1)\">x</a>",
        "<details open ontoggle=alert(1)>",
        "<style>*{background:url(//evil)}</style>",
        "<!-- <script>alert(1)</script> -->",
        "<div>\n<script>alert(1)</script>\n</div>",
        "```\"><script>alert(1)</script>\ncode\n```",
        "```js onclick=alert(1)\ncode\n```",
        "| a | b |\n|:-|-:|\n| <script>alert(1)</script> | [x](javascript:alert(1)) |",
        "* [x](javascript:alert(1))\n* <img src=x onerror=alert(1)>",
        "> <svg onload=alert(1)>",
        "# <script>alert(1)</script>",
        "[x](\u{1}javascript:alert(1))",
        "[x](javascript\u{200b}:alert(1))",
        "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>",
    ];

    #[test]
    fn the_xss_corpus_renders_inert() {
        for source in XSS_CORPUS {
            let html = render_markdown(source);
            assert_inert(source, &html);
        }
    }

    #[test]
    fn raw_html_is_shown_as_text() {
        assert_eq!(
            render_markdown("a <b>bold</b> c"),
            "<p>a &lt;b&gt;bold&lt;/b&gt; c</p>\n"
        );
        assert_eq!(
            render_markdown("<script>alert(1)</script>"),
            "<pre><code>&lt;script&gt;alert(1)&lt;/script&gt;</code></pre>\n"
        );
    }

    #[test]
    fn dangerous_links_become_their_label_and_url_as_text() {
        assert_eq!(
            render_markdown("[x](javascript:alert(1))"),
            "<p>x (javascript:alert(1))</p>\n"
        );
        assert_eq!(
            render_markdown("<javascript:alert(1)>"),
            "<p>javascript:alert(1)</p>\n"
        );
        assert!(!render_markdown("[x](java&#x09;script:alert(1))").contains("<a"));
        assert!(!render_markdown("[x](JaVaScRiPt:alert(1))").contains("<a"));
    }

    #[test]
    fn images_become_alt_text_and_url() {
        assert_eq!(
            render_markdown("![a cat](https://example.com/cat.png)"),
            "<p>[image: a cat — https://example.com/cat.png]</p>\n"
        );
    }

    #[test]
    fn allowed_links_keep_their_href_and_get_rel() {
        assert_eq!(
            render_markdown("[docs](https://example.com/a?b=1&c=2 \"the docs\")"),
            "<p><a href=\"https://example.com/a?b=1&amp;c=2\" title=\"the docs\" rel=\"noopener noreferrer nofollow\">docs</a></p>\n"
        );
        for (source, href) in [
            ("[x](HTTP://example.com)", "HTTP://example.com"),
            ("[x](mailto:a@example.com)", "mailto:a@example.com"),
            ("<a@example.com>", "mailto:a@example.com"),
            ("<https://example.com>", "https://example.com"),
            ("[x](/relative/path)", "/relative/path"),
            ("[x](#section)", "#section"),
            ("[x](page.html?q=a:b)", "page.html?q=a:b"),
            (
                "[x](< https://example.com/a b >)",
                "https://example.com/a%20b",
            ),
        ] {
            let html = render_markdown(source);
            assert!(
                html.contains(&format!("<a href=\"{href}\"")),
                "{source:?} → {html:?}"
            );
            assert!(
                html.contains("rel=\"noopener noreferrer nofollow\""),
                "{html:?}"
            );
        }
    }

    #[test]
    fn scheme_check() {
        assert!(is_allowed_url("https://example.com"));
        assert!(is_allowed_url(" https://example.com"));
        assert!(is_allowed_url("relative/a:b"));
        assert!(is_allowed_url("?q=x:y"));
        assert!(is_allowed_url("//example.com/x"));
        assert!(!is_allowed_url("java\tscript:alert(1)"));
        assert!(!is_allowed_url("java\nscript:alert(1)"));
        assert!(!is_allowed_url(" JAVASCRIPT:alert(1)"));
        assert!(!is_allowed_url("data:text/html,x"));
        assert!(!is_allowed_url("ftp://example.com"));
    }

    #[test]
    fn headings_lists_and_emphasis() {
        assert_eq!(
            render_markdown("# Title\n\n- one\n- **two**\n\n3. three\n4. ~~four~~"),
            "<h1>Title</h1>\n<ul>\n<li>one</li>\n<li><strong>two</strong></li>\n</ul>\n\
             <ol start=\"3\">\n<li>three</li>\n<li><del>four</del></li>\n</ol>\n"
        );
    }

    #[test]
    fn code_blocks_keep_a_safe_language_class() {
        assert_eq!(
            render_markdown("```rust\nfn main() {}\n```"),
            "<pre><code class=\"language-rust\">fn main() {}\n</code></pre>\n"
        );
        assert_eq!(
            render_markdown("```c++ extra words\nint x;\n```"),
            "<pre><code class=\"language-c++\">int x;\n</code></pre>\n"
        );
        assert_eq!(
            render_markdown("```\"><b>\n<b>x</b>\n```"),
            "<pre><code>&lt;b&gt;x&lt;/b&gt;\n</code></pre>\n"
        );
        assert_eq!(
            render_markdown("`<script>` inline"),
            "<p><code>&lt;script&gt;</code> inline</p>\n"
        );
    }

    #[test]
    fn tables_render_without_inline_styles() {
        let html = render_markdown("| a | b |\n|:-|-:|\n| 1 | 2 |");
        assert!(html.starts_with("<table>"), "{html}");
        assert!(
            html.contains("<th>a</th>") && html.contains("<td>2</td>"),
            "{html}"
        );
        assert!(!html.contains("style"), "{html}");
    }
}
