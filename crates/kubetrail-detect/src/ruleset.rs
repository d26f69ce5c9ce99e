//! A set of loaded documents, from any number of files.

use std::collections::HashMap;

use crate::error::{LoadError, LoadErrors};
use crate::rule::{Correlation, Document, Filter, Rule, parse_file};

/// The rules, correlations and filters of any number of files. Ids are unique across the set.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    docs: Vec<Document>,
    by_id: HashMap<String, usize>,
}

impl RuleSet {
    pub fn new() -> RuleSet {
        RuleSet::default()
    }

    /// Loads every document of one file (`file` is the name errors carry). Nothing is added if any document
    /// fails. Returns how many documents were added.
    pub fn add_file(&mut self, file: &str, src: &str) -> Result<usize, LoadErrors> {
        let docs = parse_file(file, src)?;
        let mut errors = Vec::new();
        let mut seen: HashMap<&str, ()> = HashMap::new();
        for d in &docs {
            let m = d.meta();
            if self.by_id.contains_key(&m.id) || seen.insert(&m.id, ()).is_some() {
                let first = self
                    .by_id
                    .get(&m.id)
                    .map(|&i| &self.docs[i].meta().location);
                errors.push(m.location.error(format!(
                    "duplicate rule id `{}`{}; every rule needs its own id",
                    m.id,
                    first.map_or(String::new(), |l| format!(
                        " (first in {}:{})",
                        l.file, l.line
                    ))
                )));
            }
        }
        if !errors.is_empty() {
            return Err(LoadErrors(errors));
        }
        let n = docs.len();
        for d in docs {
            self.by_id.insert(d.meta().id.clone(), self.docs.len());
            self.docs.push(d);
        }
        Ok(n)
    }

    pub fn documents(&self) -> &[Document] {
        &self.docs
    }

    pub fn rules(&self) -> impl Iterator<Item = &Rule> {
        self.docs.iter().filter_map(|d| match d {
            Document::Rule(r) => Some(r),
            _ => None,
        })
    }

    pub fn correlations(&self) -> impl Iterator<Item = &Correlation> {
        self.docs.iter().filter_map(|d| match d {
            Document::Correlation(c) => Some(c),
            _ => None,
        })
    }

    pub fn filters(&self) -> impl Iterator<Item = &Filter> {
        self.docs.iter().filter_map(|d| match d {
            Document::Filter(f) => Some(f),
            _ => None,
        })
    }

    /// A document by id, or by Sigma `name`.
    pub fn get(&self, id_or_name: &str) -> Option<&Document> {
        match self.by_id.get(id_or_name) {
            Some(&i) => Some(&self.docs[i]),
            None => self
                .docs
                .iter()
                .find(|d| d.meta().name.as_deref() == Some(id_or_name)),
        }
    }

    pub fn len(&self) -> usize {
        self.docs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.docs.is_empty()
    }

    /// Checks that every correlation and filter references loaded rules (what [`crate::Engine::new`] also
    /// checks), so `rules test` can report it without building an engine.
    pub fn check_references(&self) -> Result<(), LoadErrors> {
        let mut errors: Vec<LoadError> = Vec::new();
        let refs = self
            .correlations()
            .flat_map(|c| c.rules.iter())
            .chain(self.filters().flat_map(|f| f.rules.iter()));
        for (r, loc) in refs {
            match self.get(r) {
                Some(Document::Rule(_)) => {}
                Some(Document::Correlation(_)) => errors.push(loc.error(format!(
                    "`{r}` is a correlation rule; correlations and filters reference detection rules"
                ))),
                Some(Document::Filter(_)) => errors.push(loc.error(format!("`{r}` is a filter, not a rule"))),
                None => errors.push(loc.error(format!("no loaded rule has the id or name `{r}`"))),
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(LoadErrors(errors))
        }
    }
}
