//! Reading `registry.yaml` entry by entry: an edit re-parses only the entries whose text
//! changed. A mesh of 50,000 workloads is a 6 MB file, and parsing all of it again for
//! one added endpoint took most of the half second to a second that a change spent in
//! the operator.
//!
//! Only the plain layout is read this way: top-level `services:` and `workloads:` keys,
//! each followed by its `- ` entries, one indentation per list. Anything else (flow
//! lists, comments after a key, several documents, tabs), and any entry that does not
//! parse on its own (an alias of an anchor in another entry), is read whole by
//! [`registry_file::parse`], which also words every error.

use std::collections::HashMap;
use std::hash::BuildHasher;

use braid_api::invalid::InvalidInput;
use serde::de::DeserializeOwned;

use super::registry_file::{self, RegistryFile, ServiceDecl, WorkloadDecl};

/// The entries of the last parse, by their text.
#[derive(Default)]
pub struct EntryCache {
    entries: HashMap<(Section, u64), (Box<str>, Entry)>,
    hasher: foldhash::fast::FixedState,
    /// Entries parsed (not found here) by the last parse: for tests.
    parsed: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Section {
    Services,
    Workloads,
}

#[derive(Clone)]
enum Entry {
    Service(ServiceDecl),
    Workload(WorkloadDecl),
}

/// Parses `text` as [`registry_file::parse`] does, reusing the entries `cache` holds
/// from the last parse whose text is unchanged.
pub fn parse(text: &str, cache: &mut EntryCache) -> Result<RegistryFile, InvalidInput> {
    let whole = |cache: &mut EntryCache| {
        cache.entries.clear();
        cache.parsed = 0;
        registry_file::parse(text)
    };
    let Some(slices) = split(text) else {
        return whole(cache);
    };
    let mut next = HashMap::with_capacity(slices.len());
    let mut file = RegistryFile::default();
    let mut parsed = 0;
    for (section, slice) in slices {
        let key = (section, cache.hasher.hash_one(slice));
        let kept = match cache.entries.remove(&key) {
            Some((t, e)) if *t == *slice => Some((t, e)),
            _ => next
                .get(&key)
                .filter(|(t, _): &&(Box<str>, Entry)| **t == *slice)
                .cloned(),
        };
        let (text_of, entry) = match kept {
            Some(kept) => kept,
            None => {
                parsed += 1;
                let entry = match section {
                    Section::Services => one(slice).map(Entry::Service),
                    Section::Workloads => one(slice).map(Entry::Workload),
                };
                let Some(entry) = entry else {
                    return whole(cache);
                };
                (Box::from(slice), entry)
            }
        };
        match &entry {
            Entry::Service(s) => file.services.push(s.clone()),
            Entry::Workload(w) => file.workloads.push(w.clone()),
        }
        next.insert(key, (text_of, entry));
    }
    cache.entries = next;
    cache.parsed = parsed;
    Ok(file)
}

/// The workload entries an edit of the file removed and added since the last parse
/// (an entry whose text changed is both), from `text`, when that is all it changed.
#[derive(Debug, Default)]
pub struct WorkloadChanges {
    /// Entries no longer there, as they were.
    pub removed: Vec<WorkloadDecl>,
    /// Entries new or changed.
    pub added: Vec<WorkloadDecl>,
}

/// What `text` changed since the last parse into `cache`, when it changed workload
/// entries only, each of which parses on its own; `None` (the cache left as it was) when
/// only the whole file's reading can tell: a service entry changed, an entry given
/// twice, a layout that is not plain.
pub fn workload_changes(text: &str, cache: &mut EntryCache) -> Option<WorkloadChanges> {
    let slices = split(text)?;
    let mut seen: std::collections::HashSet<(Section, u64)> =
        std::collections::HashSet::with_capacity(slices.len());
    let mut added = Vec::new();
    for (section, slice) in slices {
        let key = (section, cache.hasher.hash_one(slice));
        if !seen.insert(key) {
            return None;
        }
        match cache.entries.get(&key) {
            Some((t, _)) if **t == *slice => {}
            // The same hash for another text: left to the whole reading.
            Some(_) => return None,
            None if section == Section::Services => return None,
            None => added.push((key, Box::<str>::from(slice), one::<WorkloadDecl>(slice)?)),
        }
    }
    let mut changes = WorkloadChanges::default();
    for (key, (_, entry)) in &cache.entries {
        if seen.contains(key) {
            continue;
        }
        match entry {
            Entry::Service(_) => return None,
            Entry::Workload(w) => changes.removed.push(w.clone()),
        }
    }
    cache.entries.retain(|key, _| seen.contains(key));
    cache.parsed = added.len();
    for (key, text, w) in added {
        cache
            .entries
            .insert(key, (text, Entry::Workload(w.clone())));
        changes.added.push(w);
    }
    Some(changes)
}

impl EntryCache {
    /// The service entries of the last parse.
    pub fn services(&self) -> impl Iterator<Item = &ServiceDecl> {
        self.entries.values().filter_map(|(_, e)| match e {
            Entry::Service(s) => Some(s),
            Entry::Workload(_) => None,
        })
    }
}

/// The one entry of a `- ` list item's text, read as the whole file reads it (through a
/// JSON value); `None` when it does not parse on its own.
fn one<T: DeserializeOwned>(slice: &str) -> Option<T> {
    let value: serde_json::Value = serde_norway::from_str(slice).ok()?;
    let serde_json::Value::Array(mut items) = value else {
        return None;
    };
    if items.len() != 1 {
        return None;
    }
    serde_json::from_value(items.pop()?).ok()
}

/// The entries of `text` with their sections, or `None` when it is not laid out plainly.
fn split(text: &str) -> Option<Vec<(Section, &str)>> {
    let mut out = Vec::new();
    let mut section = None;
    // The indentation of the current list's dashes, and where its open entry starts.
    let mut indent: Option<usize> = None;
    let mut start: Option<usize> = None;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let here = offset;
        offset += line.len();
        let content = line.trim_end_matches(['\n', '\r']);
        let trimmed = content.trim_start_matches(' ');
        if trimmed.starts_with('\t') {
            return None;
        }
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let lead = content.len() - trimmed.len();
        if lead == 0 && !trimmed.starts_with('-') {
            if let Some(s) = section {
                // A key with no entries is `null` to YAML: the whole file's reading
                // says what that means.
                start?;
                close(text, here, &mut start, &mut out, s);
            }
            let next = match trimmed.trim_end() {
                "services:" => Section::Services,
                "workloads:" => Section::Workloads,
                _ => return None,
            };
            // A key given twice is for the whole file's reading to judge.
            if out.iter().any(|(s, _)| *s == next) {
                return None;
            }
            section = Some(next);
            indent = None;
            continue;
        }
        let current = section?;
        let dash = trimmed == "-" || trimmed.starts_with("- ");
        match indent {
            None if dash => indent = Some(lead),
            None => return None,
            Some(i) if lead > i => continue,
            Some(i) if lead == i && dash => {}
            Some(_) => return None,
        }
        close(text, here, &mut start, &mut out, current);
        start = Some(here);
    }
    if let Some(s) = section {
        out.push((s, &text[start?..]));
    }
    Some(out)
}

/// Ends the open entry (if any) at `here`.
fn close<'t>(
    text: &'t str,
    here: usize,
    start: &mut Option<usize>,
    out: &mut Vec<(Section, &'t str)>,
    section: Section,
) {
    if let Some(from) = start.take() {
        out.push((section, &text[from..here]));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const PLAIN: &str = "\
services:
- {name: pay, namespace: shop, vips: [10.96.0.1], selector: {app: pay}, ports: [{port: 80}]}
# a comment between entries
- name: web
  namespace: shop
  ports:
  - port: 8080
    protocol: http
workloads:
- {name: pay-0, namespace: shop, ips: [10.0.0.1], labels: {app: pay}}
- name: web-0
  namespace: shop
  ips:
  - 10.0.0.2
  labels: {app: web}
  outboundScope: [shop/*]
";

    fn same_as_whole(text: &str, cache: &mut EntryCache) {
        assert_eq!(
            format!("{:?}", parse(text, cache)),
            format!("{:?}", registry_file::parse(text)),
            "{text}"
        );
    }

    #[test]
    fn a_plain_file_is_read_entry_by_entry_as_the_whole_file_is() {
        let mut cache = EntryCache::default();
        same_as_whole(PLAIN, &mut cache);
        assert_eq!(cache.parsed, 4);
        // Indented lists read the same.
        let indented = PLAIN
            .lines()
            .map(|l| {
                if l.ends_with(':') && !l.starts_with(' ') {
                    format!("{l}\n")
                } else {
                    format!("  {l}\n")
                }
            })
            .collect::<String>();
        same_as_whole(&indented, &mut EntryCache::default());
    }

    #[test]
    fn an_edit_parses_only_the_entries_it_changed() {
        let mut cache = EntryCache::default();
        parse(PLAIN, &mut cache).unwrap();
        let edited = PLAIN.replace("ips: [10.0.0.1]", "ips: [10.0.0.9]")
            + "- {name: new-0, namespace: shop, ips: [10.0.0.3]}\n";
        same_as_whole(&edited, &mut cache);
        assert_eq!(cache.parsed, 2, "the edited entry and the new one");
        same_as_whole(&edited, &mut cache);
        assert_eq!(cache.parsed, 0);
        // Two entries with the same text are both kept (resolving refuses them).
        let twice = format!("{edited}- {{name: new-0, namespace: shop, ips: [10.0.0.3]}}\n");
        same_as_whole(&twice, &mut cache);
        assert_eq!(parse(&twice, &mut cache).unwrap().workloads.len(), 4);
    }

    #[test]
    fn what_is_not_laid_out_plainly_or_does_not_parse_alone_is_read_whole() {
        for text in [
            "services: []\nworkloads: []\n",
            "services:   # mesh services\n- {name: a, ports: [{port: 80}]}\n",
            "---\nservices:\n- {name: a, ports: [{port: 80}]}\n",
            "services:\n- &svc {name: a, ports: [{port: 80}]}\n- *svc\n",
            "services:\n- {name: a, ports: [{port: 80}]}\nextra: 1\n",
            "services:\n- {name: a, ports: [{port: nope}]}\n",
            "workloads:\n- {name: a, ips: [not-an-ip]}\n",
            "",
            "services:\n\t- {name: a}\n",
            "services:\nworkloads:\n- {name: a, ips: [10.0.0.1]}\n",
            "workloads:\n- {name: a, ips: [10.0.0.1]}\nservices:\n",
            "services:\n- {name: a, ports: [{port: 80}]}\nservices:\n- {name: b, ports: [{port: 80}]}\n",
        ] {
            same_as_whole(text, &mut EntryCache::default());
        }
    }
}
