//! Label and field selectors, parsed from the `labelSelector` and `fieldSelector` query
//! parameters with the grammar of the real server.

use serde_json::Value;

use crate::object;
use crate::registry::ResourceType;

/// A selector that could not be parsed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SelectorError {
    /// A label selector requirement is malformed.
    #[error("unable to parse requirement: {requirement:?}: {reason}")]
    InvalidLabelRequirement {
        /// The requirement as written.
        requirement: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// A field selector term is not `key=value`, `key==value` or `key!=value`.
    #[error("invalid field selector term {0:?}: expected key=value, key==value or key!=value")]
    InvalidFieldTerm(String),

    /// The field is not one the resource type can be selected by.
    #[error("field label not supported: {0}")]
    UnsupportedField(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum LabelOperator {
    Exists,
    DoesNotExist,
    Equals(String),
    NotEquals(String),
    In(Vec<String>),
    NotIn(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct LabelRequirement {
    key: String,
    operator: LabelOperator,
}

/// A parsed label selector. The empty selector matches every object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<LabelRequirement>,
}

impl LabelSelector {
    /// Parses a selector such as `app=web,tier!=db,env in (prod,staging),!legacy`.
    pub fn parse(text: &str) -> Result<Self, SelectorError> {
        let mut requirements = Vec::new();
        for term in split_top_level(text) {
            let term = term.trim();
            if term.is_empty() {
                continue;
            }
            requirements.push(parse_label_requirement(term)?);
        }
        Ok(LabelSelector { requirements })
    }

    /// Returns whether the labels of `object` satisfy every requirement.
    pub fn matches(&self, object: &Value) -> bool {
        self.requirements.iter().all(|requirement| {
            let value = object::labels(object)
                .find(|(key, _)| *key == requirement.key)
                .map(|(_, value)| value);
            match (&requirement.operator, value) {
                (LabelOperator::Exists, found) => found.is_some(),
                (LabelOperator::DoesNotExist, found) => found.is_none(),
                (LabelOperator::Equals(expected), found) => found == Some(expected.as_str()),
                // As in Kubernetes, != and notin also match objects without the label.
                (LabelOperator::NotEquals(excluded), found) => found != Some(excluded.as_str()),
                (LabelOperator::In(values), found) => {
                    found.is_some_and(|value| values.iter().any(|candidate| candidate == value))
                }
                (LabelOperator::NotIn(values), found) => {
                    !found.is_some_and(|value| values.iter().any(|candidate| candidate == value))
                }
            }
        })
    }
}

/// Splits on commas that are not inside parentheses, so `a in (x,y),b` has two terms.
fn split_top_level(text: &str) -> Vec<&str> {
    let mut terms = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (index, character) in text.char_indices() {
        match character {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                terms.push(&text[start..index]);
                start = index + 1;
            }
            _ => {}
        }
    }
    terms.push(&text[start..]);
    terms
}

fn is_label_key_char(character: char) -> bool {
    character.is_ascii_alphanumeric() || matches!(character, '-' | '_' | '.' | '/')
}

fn parse_label_requirement(term: &str) -> Result<LabelRequirement, SelectorError> {
    let invalid = |reason| SelectorError::InvalidLabelRequirement {
        requirement: term.to_string(),
        reason,
    };

    if let Some(key) = term.strip_prefix('!') {
        let key = key.trim();
        if key.is_empty() || !key.chars().all(is_label_key_char) {
            return Err(invalid("expected a label key after '!'"));
        }
        return Ok(LabelRequirement {
            key: key.to_string(),
            operator: LabelOperator::DoesNotExist,
        });
    }

    let key_end = term
        .find(|c: char| !is_label_key_char(c))
        .unwrap_or(term.len());
    let key = &term[..key_end];
    if key.is_empty() {
        return Err(invalid("expected a label key"));
    }
    let rest = term[key_end..].trim_start();

    let operator = if rest.is_empty() {
        LabelOperator::Exists
    } else if let Some(value) = rest.strip_prefix("!=") {
        LabelOperator::NotEquals(
            parse_label_value(value).ok_or_else(|| invalid("invalid label value"))?,
        )
    } else if let Some(value) = rest.strip_prefix("==").or_else(|| rest.strip_prefix('=')) {
        LabelOperator::Equals(
            parse_label_value(value).ok_or_else(|| invalid("invalid label value"))?,
        )
    } else if let Some(set) = rest.strip_prefix("notin") {
        LabelOperator::NotIn(
            parse_value_set(set).ok_or_else(|| invalid("expected a value set such as (a,b)"))?,
        )
    } else if let Some(set) = rest.strip_prefix("in") {
        LabelOperator::In(
            parse_value_set(set).ok_or_else(|| invalid("expected a value set such as (a,b)"))?,
        )
    } else {
        return Err(invalid("expected one of =, ==, !=, in, notin"));
    };
    Ok(LabelRequirement {
        key: key.to_string(),
        operator,
    })
}

fn parse_label_value(text: &str) -> Option<String> {
    let value = text.trim();
    value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .then(|| value.to_string())
}

fn parse_value_set(text: &str) -> Option<Vec<String>> {
    let inner = text.trim().strip_prefix('(')?.strip_suffix(')')?;
    inner.split(',').map(parse_label_value).collect()
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct FieldRequirement {
    field: String,
    value: String,
    equal: bool,
}

/// A parsed field selector. The empty selector matches every object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    requirements: Vec<FieldRequirement>,
}

impl FieldSelector {
    /// Parses a selector such as `metadata.name=web,type!=Opaque`, checking each field
    /// against the labels `resource` supports.
    pub fn parse(text: &str, resource: &ResourceType) -> Result<Self, SelectorError> {
        let mut requirements = Vec::new();
        for term in text.split(',') {
            let term = term.trim();
            if term.is_empty() {
                continue;
            }
            let (field, value, equal) = if let Some((field, value)) = term.split_once("!=") {
                (field, value, false)
            } else if let Some((field, value)) = term.split_once("==") {
                (field, value, true)
            } else if let Some((field, value)) = term.split_once('=') {
                (field, value, true)
            } else {
                return Err(SelectorError::InvalidFieldTerm(term.to_string()));
            };
            let field = field.trim();
            if !resource.supports_field_label(field) {
                return Err(SelectorError::UnsupportedField(field.to_string()));
            }
            requirements.push(FieldRequirement {
                field: field.to_string(),
                value: value.trim().to_string(),
                equal,
            });
        }
        Ok(FieldSelector { requirements })
    }

    /// Returns whether `object` satisfies every requirement. A missing field reads as "".
    pub fn matches(&self, object: &Value) -> bool {
        self.requirements.iter().all(|requirement| {
            let value = object::field_value(object, &requirement.field).unwrap_or_default();
            (value == requirement.value) == requirement.equal
        })
    }

    /// Returns the name that a `metadata.name=` requirement pins, if any.
    pub fn pinned_name(&self) -> Option<&str> {
        self.requirements
            .iter()
            .find(|requirement| requirement.equal && requirement.field == "metadata.name")
            .map(|requirement| requirement.value.as_str())
    }
}

/// A label and a field selector together, as list and watch requests carry them.
#[derive(Debug, Clone, Default)]
pub struct Selectors {
    /// The `labelSelector` parameter.
    pub labels: LabelSelector,
    /// The `fieldSelector` parameter.
    pub fields: FieldSelector,
}

impl Selectors {
    /// Returns whether `object` satisfies both selectors.
    pub fn matches(&self, object: &Value) -> bool {
        self.labels.matches(object) && self.fields.matches(object)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labelled(labels: Value) -> Value {
        json!({"metadata": {"name": "web", "labels": labels}})
    }

    #[test]
    fn label_selector_operators() {
        let object = labelled(json!({"app": "web", "tier": "front", "env": "prod"}));
        let cases = [
            ("equals matches", "app=web", true),
            ("double equals matches", "app==web", true),
            ("equals rejects other value", "app=db", false),
            ("not equals rejects same value", "tier!=front", false),
            ("not equals matches missing label", "zone!=a", true),
            ("in matches member", "env in (prod,staging)", true),
            ("in rejects missing label", "zone in (a)", false),
            ("notin rejects member", "env notin (prod)", false),
            ("notin matches missing label", "zone notin (a,b)", true),
            ("exists matches", "app", true),
            ("exists rejects missing", "zone", false),
            ("does not exist matches missing", "!zone", true),
            ("does not exist rejects present", "!app", false),
            (
                "all terms must match",
                "app=web,env in (prod, dev),!zone",
                true,
            ),
            ("one failing term rejects", "app=web,tier=back", false),
            ("empty selector matches", "", true),
        ];
        for (case, selector, expected) in cases {
            let parsed =
                LabelSelector::parse(selector).unwrap_or_else(|error| panic!("{case}: {error}"));
            assert_eq!(parsed.matches(&object), expected, "{case}");
        }
    }

    #[test]
    fn label_selector_rejects_malformed_terms() {
        for selector in [
            "app=web=x",
            "=web",
            "env in prod",
            "env in (prod",
            "app > 3",
            "!",
        ] {
            assert!(LabelSelector::parse(selector).is_err(), "{selector} parsed");
        }
    }

    #[test]
    fn field_selector_on_secret_type() {
        let secrets = crate::registry::lookup("", "v1", "secrets").unwrap();
        let tls = json!({"metadata": {"name": "cert", "namespace": "default"}, "type": "kubernetes.io/tls"});
        let selector = FieldSelector::parse("type=kubernetes.io/tls", secrets).unwrap();
        assert!(selector.matches(&tls));
        let selector = FieldSelector::parse("type!=kubernetes.io/tls", secrets).unwrap();
        assert!(!selector.matches(&tls));
        let selector =
            FieldSelector::parse("metadata.name==cert,metadata.namespace=default", secrets)
                .unwrap();
        assert!(selector.matches(&tls));
        assert_eq!(selector.pinned_name(), Some("cert"));
    }

    #[test]
    fn field_selector_rejects_unsupported_field() {
        let services = crate::registry::lookup("", "v1", "services").unwrap();
        assert_eq!(
            FieldSelector::parse("spec.type=ClusterIP", services),
            Err(SelectorError::UnsupportedField("spec.type".into()))
        );
        assert!(FieldSelector::parse("metadata.name", services).is_err());
    }
}
