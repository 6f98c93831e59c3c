//! The page's stacks, written once: every frame's label and tooltip in a table at the end of
//! the page (as JSON), and each stack as the list of its frames' indices, drawn when its row is
//! opened. A page of 10,000 sites with deep stacks would otherwise repeat every frame's text in
//! every row (4 KiB a row: 42 MB of sites on many_sites).

use std::{cell::RefCell, collections::HashMap};

use crate::summary::label::{self, Frame, Style};

/// Frames and stacks met while a page is rendered.
#[derive(Default)]
struct Table {
    labels: Vec<String>,
    titles: Vec<String>,
    index: HashMap<(String, String), usize>,
    /// Each stack: its frames' indices.
    stacks: Vec<Vec<usize>>,
}

thread_local! {
    /// The table of the page being rendered (see [`begin`] and [`end`]).
    static TABLE: RefCell<Table> = RefCell::new(Table::default());
}

/// A page begins: no stack yet.
pub fn begin() {
    TABLE.with(|t| *t.borrow_mut() = Table::default());
}

/// A frame's file in full, with its build id: the tooltip of its line.
pub fn title(f: &Frame) -> String {
    match (&f.module, &f.build_id) {
        (Some(module), Some(id)) => format!("{module} (build id {id})"),
        (Some(module), None) => module.to_string(),
        _ => String::new(),
    }
}

/// An empty list for `stack`, filled from the table when its row opens.
pub fn list(stack: &[Frame]) -> String {
    let id = TABLE.with(|t| {
        let mut t = t.borrow_mut();
        let frames = stack
            .iter()
            .map(|f| {
                // What the target named is shown, never obeyed: controls made visible.
                let key = (
                    super::visible(&label::frame(f, Style::Full)).into_owned(),
                    super::visible(&title(f)).into_owned(),
                );
                let next = t.labels.len();
                let i = *t.index.entry(key.clone()).or_insert(next);
                if i == next {
                    t.labels.push(key.0);
                    t.titles.push(key.1);
                }
                i
            })
            .collect();
        t.stacks.push(frames);
        t.stacks.len() - 1
    });
    format!("<ol class=\"stack\" data-s=\"{id}\"></ol>")
}

/// The table as a script element, and the script that draws a stack when its row opens and
/// lets the filter boxes search frames. JSON with `<` escaped: nothing in it ends the script.
pub fn end() -> String {
    let table = TABLE.with(|t| std::mem::take(&mut *t.borrow_mut()));
    let json = serde_json::json!({
        "f": table.labels,
        "t": table.titles,
        "s": table.stacks,
    })
    .to_string();
    // `<` could end the script; controls and bidirectional overrides could disguise text.
    let mut safe = String::with_capacity(json.len());
    for c in json.chars() {
        if c == '<'
            || c.is_control()
            || ('\u{202a}'..='\u{202e}').contains(&c)
            || ('\u{2066}'..='\u{2069}').contains(&c)
        {
            for unit in c.encode_utf16(&mut [0; 2]) {
                safe.push_str(&format!("\\u{unit:04x}"));
            }
        } else {
            safe.push(c);
        }
    }
    let json = safe;
    format!(
        "<script type=\"application/json\" id=\"stacks\">{json}</script><script>{DRAW}</script>"
    )
}

const DRAW: &str = "
var STACKS = JSON.parse(document.getElementById('stacks').textContent);
function drawStack(ol) {
  if (ol.childElementCount) return;
  STACKS.s[+ol.getAttribute('data-s')].forEach(function (i) {
    var li = document.createElement('li');
    li.textContent = STACKS.f[i];
    if (STACKS.t[i]) li.title = STACKS.t[i];
    ol.appendChild(li);
  });
}
function stackText(row) {
  if (row.stackText === undefined) {
    row.stackText = Array.prototype.map.call(row.querySelectorAll('ol.stack[data-s]'), function (ol) {
      return STACKS.s[+ol.getAttribute('data-s')].map(function (i) { return STACKS.f[i] + ' ' + STACKS.t[i]; }).join(' ');
    }).join(' ').toLowerCase();
  }
  return row.stackText;
}
document.addEventListener('toggle', function (e) {
  if (!e.target.open || !e.target.querySelectorAll) return;
  e.target.querySelectorAll('ol.stack[data-s]').forEach(drawStack);
}, true);
";

#[cfg(test)]
mod tests {
    use super::*;

    /// Frames are written once however many stacks hold them; labels and tooltips as the text
    /// shows them; nothing from the target can end the script.
    #[test]
    fn frames_once_and_safe() {
        let f = Frame {
            function: Some("inflate".into()),
            module: Some("/usr/lib/libz.so.1".into()),
            offset: Some(0x4a2f1),
            build_id: Some("709f60bf".into()),
            ..Frame::unknown(0x7f00_0004_a2f1)
        };
        let evil = Frame {
            function: Some("</script><script>alert(1)</script>".into()),
            build_id: None,
            ..f.clone()
        };
        begin();
        assert_eq!(
            list(&[f.clone(), evil.clone()]),
            "<ol class=\"stack\" data-s=\"0\"></ol>"
        );
        assert_eq!(list(&[evil, f]), "<ol class=\"stack\" data-s=\"1\"></ol>");
        let page = end();
        assert!(!page.contains("</script><script>alert"), "{page}");
        let json = page
            .split("id=\"stacks\">")
            .nth(1)
            .and_then(|r| r.split("</script>").next())
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(v["s"], serde_json::json!([[0, 1], [1, 0]]));
        assert_eq!(v["f"][0], "0x7f000004a2f1 inflate in libz.so.1+0x4a2f1");
        assert_eq!(v["t"][0], "/usr/lib/libz.so.1 (build id 709f60bf)");
        assert_eq!(v["t"][1], "/usr/lib/libz.so.1");
        assert_eq!(
            v["f"][1],
            "0x7f000004a2f1 </script><script>alert(1)</script> in libz.so.1+0x4a2f1"
        );
        // The next page starts empty.
        begin();
        assert_eq!(list(&[]), "<ol class=\"stack\" data-s=\"0\"></ol>");
        let _ = end();
    }
}
