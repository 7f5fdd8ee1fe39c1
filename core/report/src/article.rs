//! The figures the nested-KVM article published, shown beside the measured ones, kept here and
//! nowhere else.
//!
//! Source: "Nested KVM: inception" (Christian Horn, Red Hat blog). It timed the same shell loop on
//! a host and at each level of KVM guests nested in it, and gave each step as the time's growth
//! over the level below: level 0 to 1 `+29%`, 1 to 2 `+6%`, 2 to 3 `+140%`.

/// One published step: the median at `level` over the median one level down, for `kind`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Step {
    pub kind: &'static str,
    pub level: u32,
    pub ratio: f64,
}

/// Every step the article published.
pub const STEPS: &[Step] = &[
    Step { kind: "shell_loop", level: 1, ratio: 1.29 },
    Step { kind: "shell_loop", level: 2, ratio: 1.06 },
    Step { kind: "shell_loop", level: 3, ratio: 2.40 },
];

/// Who published [`STEPS`], as the page credits them.
pub const SOURCE: &str = "“Nested KVM: inception” (Christian Horn, Red Hat blog)";

/// The article's step into `level` for benchmarks of `kind`, as a ratio (1.29 is `+29%`).
pub fn step(kind: &str, level: u32) -> Option<f64> {
    STEPS.iter().find(|s| s.kind == kind && s.level == level).map(|s| s.ratio)
}

/// Whether the article published any figure for `kind`.
pub fn has_figures(kind: &str) -> bool {
    STEPS.iter().any(|s| s.kind == kind)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::percent;

    #[test]
    fn the_shell_loop_steps_read_as_the_article_wrote_them() {
        let steps: Vec<String> = (1..=3).filter_map(|l| step("shell_loop", l)).map(percent).collect();
        assert_eq!(steps, ["+29%", "+6%", "+140%"]);
        assert_eq!((step("shell_loop", 0), step("sha256", 1)), (None, None));
        assert!(has_figures("shell_loop") && !has_figures("boot"));
    }
}
