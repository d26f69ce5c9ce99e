//! Small helpers over saphyr's spanned YAML nodes.

use saphyr::{MarkedYaml, Scalar, YamlData};

pub(crate) type Node<'a> = MarkedYaml<'a>;

/// 1-based line and column of a node (1:1 when unknown).
pub(crate) fn pos(node: &Node<'_>) -> (usize, usize) {
    let m = node.span.start;
    (m.line().max(1), m.col() + 1)
}

/// A node's value, through tags (`!!str`, ...).
pub(crate) fn untag<'n, 'a>(node: &'n Node<'a>) -> &'n Node<'a> {
    match &node.data {
        YamlData::Tagged(_, inner) => untag(inner),
        _ => node,
    }
}

pub(crate) fn kind_name(node: &Node<'_>) -> &'static str {
    match &untag(node).data {
        YamlData::Value(Scalar::Null) => "null",
        YamlData::Value(Scalar::Boolean(_)) => "a boolean",
        YamlData::Value(Scalar::Integer(_)) => "an integer",
        YamlData::Value(Scalar::FloatingPoint(_)) => "a number",
        YamlData::Value(Scalar::String(_)) | YamlData::Representation(..) => "a string",
        YamlData::Sequence(_) => "a list",
        YamlData::Mapping(_) => "a mapping",
        _ => "an unreadable value",
    }
}

pub(crate) fn as_str<'n>(node: &'n Node<'_>) -> Option<&'n str> {
    match &untag(node).data {
        YamlData::Value(Scalar::String(s)) => Some(s),
        YamlData::Representation(s, ..) => Some(s),
        _ => None,
    }
}

pub(crate) fn scalar<'n, 'a>(node: &'n Node<'a>) -> Option<&'n Scalar<'a>> {
    match &untag(node).data {
        YamlData::Value(s) => Some(s),
        _ => None,
    }
}

/// A scalar as text (strings, numbers and booleans), for metadata fields that are usually strings.
pub(crate) fn text(node: &Node<'_>) -> Option<String> {
    match scalar(node)? {
        Scalar::String(s) => Some(s.to_string()),
        Scalar::Integer(i) => Some(i.to_string()),
        Scalar::FloatingPoint(f) => Some(f.to_string()),
        Scalar::Boolean(b) => Some(b.to_string()),
        Scalar::Null => None,
    }
}

pub(crate) fn mapping<'n, 'a>(
    node: &'n Node<'a>,
) -> Option<impl Iterator<Item = (&'n Node<'a>, &'n Node<'a>)>> {
    match &untag(node).data {
        YamlData::Mapping(m) => Some(m.iter()),
        _ => None,
    }
}

pub(crate) fn sequence<'n, 'a>(node: &'n Node<'a>) -> Option<&'n [Node<'a>]> {
    match &untag(node).data {
        YamlData::Sequence(s) => Some(s),
        _ => None,
    }
}

/// A YAML value as JSON (for extension keys kept as data). Non-string keys are written as text.
pub(crate) fn to_json(node: &Node<'_>) -> serde_json::Value {
    use serde_json::Value as J;
    match &untag(node).data {
        YamlData::Value(Scalar::Null) => J::Null,
        YamlData::Value(Scalar::Boolean(b)) => J::Bool(*b),
        YamlData::Value(Scalar::Integer(i)) => J::from(*i),
        YamlData::Value(Scalar::FloatingPoint(f)) => {
            serde_json::Number::from_f64(f.into_inner()).map_or(J::Null, J::Number)
        }
        YamlData::Value(Scalar::String(s)) => J::String(s.to_string()),
        YamlData::Representation(s, ..) => J::String(s.to_string()),
        YamlData::Sequence(s) => J::Array(s.iter().map(to_json).collect()),
        YamlData::Mapping(m) => J::Object(
            m.iter()
                .map(|(k, v)| (text(k).unwrap_or_else(|| "null".to_string()), to_json(v)))
                .collect(),
        ),
        _ => J::Null,
    }
}
