//! CEL rules for the schemas, written for Kubernetes 1.28's CEL library and cost budget.
//!
//! What 1.28 accepts was measured on a real API server (see DESIGN.md): nested
//! `all(...exists(...))` over bounded lists, "exactly one of" as a filtered list of
//! `has()`, "ends at" by index, and sums written out term by term. `list.sum()` is refused
//! at CRD apply time, so rules here never use it. Every list and string a rule walks is
//! bounded (`maxItems`/`maxLength`) so the estimated cost stays inside the budget.

/// `self` (a list of objects with an integer `weight`) is empty or sums to exactly 100.
/// Written out for `max_items` entries because 1.28 has no `sum()`.
pub fn weights_sum_to_100(max_items: u32) -> String {
    let terms: Vec<String> = (0..max_items)
        .map(|i| format!("(self.size() > {i} ? self[{i}].weight : 0)"))
        .collect();
    format!("self.size() == 0 || {} == 100", terms.join(" + "))
}

/// In `self` (a list of objects), only the last entry may lack a non-empty `field`: an
/// entry without it matches everything and would make the entries after it unreachable.
pub fn only_last_may_lack(field: &str, max_items: u32) -> String {
    (0..max_items.saturating_sub(1))
        .map(|i| {
            format!(
                "(self.size() <= {} || (has(self[{i}].{field}) && self[{i}].{field}.size() > 0))",
                i + 1
            )
        })
        .collect::<Vec<_>>()
        .join(" && ")
}

/// `self` (a list of integers) is strictly ascending. Written out pairwise for `max_items`.
pub fn strictly_ascending(max_items: u32) -> String {
    (1..max_items)
        .map(|i| format!("(self.size() <= {i} || self[{}] < self[{i}])", i - 1))
        .collect::<Vec<_>>()
        .join(" && ")
}

/// Exactly one of the named optional fields of `self` is set.
pub fn exactly_one_of(fields: &[&str]) -> String {
    let has: Vec<String> = fields.iter().map(|f| format!("has(self.{f})")).collect();
    format!("[{}].filter(x, x).size() == 1", has.join(", "))
}

/// At least one of the named optional fields of `self` is set.
pub fn at_least_one_of(fields: &[&str]) -> String {
    fields
        .iter()
        .map(|f| format!("has(self.{f})"))
        .collect::<Vec<_>>()
        .join(" || ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sum_is_written_out() {
        assert_eq!(
            weights_sum_to_100(2),
            "self.size() == 0 || (self.size() > 0 ? self[0].weight : 0) + (self.size() > 1 ? self[1].weight : 0) == 100"
        );
    }

    #[test]
    fn ascending_is_pairwise() {
        assert_eq!(
            strictly_ascending(3),
            "(self.size() <= 1 || self[0] < self[1]) && (self.size() <= 2 || self[1] < self[2])"
        );
    }

    #[test]
    fn only_the_last_may_be_a_catch_all() {
        assert_eq!(
            only_last_may_lack("match", 3),
            "(self.size() <= 1 || (has(self[0].match) && self[0].match.size() > 0)) && \
             (self.size() <= 2 || (has(self[1].match) && self[1].match.size() > 0))"
        );
    }

    #[test]
    fn one_of() {
        assert_eq!(
            exactly_one_of(&["a", "b"]),
            "[has(self.a), has(self.b)].filter(x, x).size() == 1"
        );
        assert_eq!(at_least_one_of(&["a", "b"]), "has(self.a) || has(self.b)");
    }
}
