//! Skill policies beyond the base model: a fixed weighting of a pack's skills, and a router
//! that weights them per prompt (features cached per prompt across routers).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use skillpack_data::tasks::TaskItem;
use skillpack_llama::{Context, Model, Token};
use skillpack_route::{FeatureExtractor, FeatureKind, Router};
use skillpack_run::{Mode, SkillEngine};

use crate::harness::{prompt_tokens, SkillPolicy};
use crate::{EvalError, Result};

/// A fixed weighting of a pack's skills, applied as given.
pub struct FixedWeights<'m> {
    pub engine: SkillEngine<'m>,
    /// One weight per pack skill, in pack order.
    pub weights: Vec<f32>,
    pub mode: Mode,
}

impl<'m> SkillPolicy<'m> for FixedWeights<'m> {
    fn apply(
        &mut self,
        ctx: &mut Context<'m>,
        _item: &TaskItem,
        _prompt: &[Token],
        expected_tokens: usize,
    ) -> Result<Vec<(String, f32)>> {
        let applied = self
            .engine
            .apply(ctx, &self.weights, self.mode, expected_tokens)?;
        Ok(self.engine.named_weights(&applied.selection))
    }
}

/// Router features by (feature kind, rendered prompt text), shared by every routed policy of a
/// run: an item is featurized once whatever the number of routers reading it.
pub type FeatureCache = Rc<RefCell<HashMap<(FeatureKind, String), Vec<f32>>>>;

/// Weights from a router, per prompt.
pub struct Routed<'m> {
    pub engine: SkillEngine<'m>,
    pub router: Router,
    pub extractor: FeatureExtractor<'m>,
    /// The pack's skill ids, in pack order.
    pub skills: Vec<String>,
    pub mode: Mode,
    pub model: &'m Model,
    pub cache: FeatureCache,
}

impl<'m> SkillPolicy<'m> for Routed<'m> {
    fn apply(
        &mut self,
        ctx: &mut Context<'m>,
        item: &TaskItem,
        _prompt: &[Token],
        expected_tokens: usize,
    ) -> Result<Vec<(String, f32)>> {
        let key = (
            self.router.config.features,
            format!("{}\u{0}{}", item.context, item.query),
        );
        let cached = self.cache.borrow().get(&key).cloned();
        let features = match cached {
            Some(f) => f,
            None => {
                let prompt = prompt_tokens(self.model, &item.context, &item.query)?;
                let f = self
                    .extractor
                    .features(&prompt)
                    .map_err(|e| EvalError::Invalid(e.to_string()))?;
                self.cache.borrow_mut().insert(key, f.clone());
                f
            }
        };
        let weights = self
            .router
            .weights_for(&features, None, &self.skills)
            .map_err(|e| EvalError::Invalid(e.to_string()))?;
        let applied = self
            .engine
            .apply(ctx, &weights, self.mode, expected_tokens)?;
        Ok(self.engine.named_weights(&applied.selection))
    }
}
