//! User-style requests for each query template of the skill builders (`skills.rs`).
//!
//! Every skill's records are phrased with a few fixed templates; routers and skills trained only
//! on those fail when a user asks in their own words. The lists here are what users actually
//! type for the same request: different words, with or without labels, short and long, terse or
//! polite, now and then with a typo or a reason. A builder renders a share of its records with
//! one of these (picked by a hash of the record id) instead of its own templates, so routers and
//! skills learn what users write, not only our templates.
//!
//! Slots in braces (`{question}`, `{entity}`, `{labels}`, ...) are filled by the builder with the
//! values it already has for the record; each list's doc line names its slots. The text a request
//! is about (an abstract, a dialogue, a "Question A / Question B" pair, a sentence with `<< >>`
//! and `[[ ]]` marks) is not part of the request: the builder places it before or after. Most
//! requests refer to it in a way that reads well either way ("this abstract", "the text"); the
//! few that say "above" or "below" expect the text before or after the request respectively, so
//! a builder may use those words to choose the placement.
//!
//! Requests never dictate the answer's layout (users don't); the skill learns its format from
//! the outputs. They do keep everything the answer depends on: a yes/no answer is asked as a
//! yes/no question, a fixed label set is given (`{labels}`), and the NCBI entity requests ask for
//! diseases only.

/// `qa` (MedQuAD), every template (`{q}`, "Answer this medical question: {q}", ...): a consumer
/// or professional medical question. Slot: `{question}`.
pub const QA_QUESTION: &[&str] = &[
    "quick question: {question}",
    "{question} Thanks in advance.",
    "Hi there. {question}",
    "I'm trying to understand a condition someone in my family has. {question}",
    "{question} Please keep it simple, I'm not a medical person.",
    "Can you help me with something? {question}",
    "{question} I'd appreciate a clear explanation.",
    "{question} (asking for a relative)",
    "Med student here, revising for an exam. {question}",
    "{question} Explain it the way you would to a patient.",
    "Could you explain this to me: {question}",
    "Looking for reliable info. {question}",
    "{question} what do i need to know",
    "I've been reading conflicting things online. {question}",
    "Need a straight answer please: {question}",
    "{question} Any details you can give would help.",
    "pls help - {question}",
    "A patient asked me this and I want to give a good answer: {question}",
    "{question} I'm writing a health leaflet and want the facts right.",
    "Wondering about this one: {question}",
    "{question}\n\nI'm a caregiver, so practical information helps.",
    "Something I've always wanted to know. {question}",
];

/// `mcqa` (MedQA, MedMCQA), every variant: an exam question with its lettered options, both
/// inside the request. Slot: `{question_and_options}`.
pub const MCQA: &[&str] = &[
    "{question_and_options}\n\nwhich one is it?",
    "Practice exam question, what's the answer?\n\n{question_and_options}",
    "Help me with this board question:\n\n{question_and_options}",
    "{question_and_options}\n\nanswer?",
    "Can you solve this MCQ?\n{question_and_options}",
    "{question_and_options}\n\nWhat's the best answer here?",
    "Studying for my boards. Which option is right?\n\n{question_and_options}",
    "{question_and_options}\nPick the correct option please.",
    "Which of these would you pick?\n\n{question_and_options}",
    "{question_and_options}\n\nWhat would you choose, and which letter is it?",
    "Quiz time:\n{question_and_options}",
    "I got this one wrong on a mock test and want to know the right answer.\n\n{question_and_options}",
    "{question_and_options}\n\nwhich option is teh right one",
    "Could you tell me the correct choice for this question?\n\n{question_and_options}",
    "{question_and_options}\n\nOne answer only please.",
    "Here's a multiple choice question from my revision set:\n\n{question_and_options}",
    "{question_and_options}\n\nWhich one's right?",
    "Answer this for me:\n\n{question_and_options}",
    "{question_and_options}\n\nbest choice?",
    "My study group can't agree on this one. What's correct?\n\n{question_and_options}",
];

/// `mc` (MTS-Dialog), every template ("Continue the conversation as the doctor.", ...): the
/// doctor's next turn after the dialogue so far. No slots.
pub const MC_NEXT_TURN: &[&str] = &[
    "What would the doctor reply here?",
    "You're the physician in this conversation. What do you say next?",
    "next doctor line?",
    "How should the doctor respond to what the patient just said?",
    "Play the doctor and give the next response.",
    "Can you write what the clinician says next in this dialogue?",
    "I'm practicing patient interviews. What's a good next thing for the doctor to say?",
    "Continue this as the doc.",
    "What does the doctor say after this?",
    "Respond as the physician would at this point in the visit.",
    "Give me the doctor's next line in the conversation above.",
    "If you were the doctor in the transcript below, what would you say next?",
    "Pick up where this leaves off, speaking as the doctor.",
    "what would a doctor say next in this convo",
    "Please suggest the physician's next turn for this consultation.",
    "Reply as the doctor to what was just said.",
    "I'm writing a training script for medical students; draft the doctor's next response in this exchange.",
    "How would the doctor carry on this conversation?",
    "Your turn, doctor. What do you say?",
    "Imagine you're the GP here. How do you answer?",
];

/// `mldc` (HoC), the list question ("Which hallmarks of cancer does this abstract discuss?
/// Choose from: ..."): every hallmark the abstract discusses, or none. Optional slot:
/// `{hallmarks}` (the allowed hallmark names, joined by the builder).
pub const MLDC_LIST: &[&str] = &[
    "Which cancer hallmarks is this abstract about?",
    "hallmarks of cancer in this text?",
    "Could you tell me which of the hallmarks of cancer this paper talks about, if any?",
    "Tag this abstract with the relevant cancer hallmarks: {hallmarks}.",
    "Which of these hallmarks of cancer apply to the abstract? {hallmarks}",
    "I'm sorting papers for a review on the hallmarks of cancer. Which hallmarks is this one relevant to?",
    "Options: {hallmarks}. Which of these hallmarks does the text discuss?",
    "What hallmarks of cancer (in the Hanahan and Weinberg sense) are discussed here?",
    "label this abstract with hallmarks of cancer, choosing from {hallmarks}",
    "Does this abstract relate to any hallmarks of cancer? Which ones?",
    "Sort the abstract below into cancer hallmark categories.",
    "Which hallmark(s) of cancer is this study about? Possible ones: {hallmarks}.",
    "Map this abstract onto the hallmarks of cancer. It may match several, one, or none.",
    "which cancer hallmarks r mentioned in this abstract",
    "For my literature database I need the hallmarks of cancer each abstract addresses. What are they for this one? Allowed labels: {hallmarks}",
    "Identify every hallmark of cancer this passage deals with.",
    "Given the hallmarks {hallmarks}, which ones does this abstract touch on?",
    "What cancer hallmarks come up in the abstract above?",
    "Any of the ten hallmarks of cancer in this one?",
    "Which hallmarks of cancer are relevant to this text? Pick from: {hallmarks}. It's fine if none fit.",
];

/// `mldc` (HoC), the per-hallmark question ("Does this abstract discuss the cancer hallmark
/// ...? Answer yes or no."): yes or no. Slot: `{hallmark}`.
pub const MLDC_ONE: &[&str] = &[
    "Is {hallmark} discussed in this abstract?",
    "does this text deal with the hallmark {hallmark}? yes or no",
    "Quick check: is this abstract relevant to the cancer hallmark '{hallmark}'?",
    "Would you tag this paper with the hallmark of cancer \"{hallmark}\"?",
    "Does the abstract address {hallmark} as a hallmark of cancer?",
    "{hallmark}: does this abstract cover it?",
    "I'm screening abstracts for the hallmark \"{hallmark}\". Does this one qualify?",
    "Is the hallmark {hallmark} part of what this study is about?",
    "yes/no: this abstract is about the cancer hallmark {hallmark}",
    "Does this passage touch on the hallmark of cancer called {hallmark}?",
    "Can this abstract be classed under {hallmark}?",
    "Is there anything in this text about {hallmark}, in the hallmarks-of-cancer sense?",
    "Would you say the study above relates to {hallmark}?",
    "Is {hallmark} one of the cancer hallmarks this abstract discusses? Just yes or no.",
    "does this abstract fall under teh hallmark {hallmark}?",
    "For a systematic review on {hallmark}, is this abstract relevant to that hallmark?",
    "Hallmark \"{hallmark}\" - present in this abstract, yes or no?",
    "Is this paper an example of the cancer hallmark {hallmark}?",
];

/// `mrc` (PubMedQA), every variant: a research question about the abstract, answered yes, no or
/// maybe with the reasoning. Slot: `{question}`.
pub const MRC: &[&str] = &[
    "{question} Yes, no or maybe? Explain using the abstract.",
    "Reading this abstract: {question} Tell me yes, no, or maybe and why.",
    "{question}\nDoes the study say yes, no, or maybe? Briefly justify.",
    "Here's my question about the paper: {question} Give yes/no/maybe with a short explanation.",
    "{question} (yes / no / maybe, and a sentence on why)",
    "I'm doing a journal club on this abstract. {question} Can you give me a yes, no or maybe and the reasoning behind it?",
    "What does this text conclude? {question} Answer yes, no, or maybe and say why.",
    "{question} what does the abstract suggest - yes, no, maybe? explain",
    "Given the results described: {question} Is it yes, no or maybe, and why?",
    "Based purely on the text, would you say yes, no, or maybe to this: {question} Please back it up with the findings.",
    "{question}\n\nyes/no/maybe + reason pls",
    "My supervisor asked me this about the paper: {question} Is the answer yes, no or maybe? Explain from the evidence.",
    "Q: {question}\nDoes the evidence in this abstract point to yes, no, or maybe? Give the reason.",
    "{question} Is that supported by this study (yes), contradicted (no), or left open (maybe)? Why?",
    "Does this paper answer the following with a yes, a no, or a maybe? {question} Include a brief rationale.",
    "{question} I need a verdict (yes, no or maybe) plus the reasoning from the abstract.",
    "{question} Answer with yes no or maybe, and explane briefly.",
    "Short version please: {question} yes, no or maybe, and the main reason.",
];

/// `nli` (MEDIQA RQE), every template: the text holds "Question A" and "Question B"; does
/// answering B answer A (fully or partly)? Yes or no. No slots.
pub const NLI_RQE: &[&str] = &[
    "If someone answers question B, does that take care of question A too? yes or no",
    "Would the answer to B cover what A is asking? Yes or no.",
    "Can question A be answered by the answer to question B? yes/no",
    "Is B's answer good enough for A? Just yes or no please.",
    "Here are two health questions. Does a reply to B also address A?",
    "I run a health FAQ. If I already have an answer for question B, can I reuse it for question A? Yes or no?",
    "A vs B: would answering B settle A?",
    "Does question B's answer resolve question A, at least in part?",
    "same answer for A and B? i.e. does answering B answer A",
    "Would a good answer to question B work as an answer to question A? y/n",
    "Looking at these two questions, is A answered once B is answered?",
    "Can I point the person who asked A to the answer for B? yes or no",
    "Do these questions match, meaning B's answer works for A?",
    "Tell me if answering question B would give the asker of question A what they need.",
    "does an answer to B answer A too?",
    "We're deduplicating patient questions. For the pair in this text, does B's answer satisfy A?",
    "is question A covered if we answer question B?",
    "Question A and question B: if I respond to B, have I responded to A? Yes or no.",
];

/// `ts` (MTS-Dialog), every template ("Summarize the {s} section of the clinical note ...", ...):
/// one section of the clinical note from the dialogue. Slot: `{section}` (the section's name,
/// e.g. "history of present illness").
pub const TS_SECTION: &[&str] = &[
    "Can you write up the {section} from this visit?",
    "Draft the {section} part of the note for this encounter.",
    "{section} section from this conversation, please.",
    "I need the {section} for the chart based on this doctor-patient talk.",
    "Pull the {section} out of this transcript and write it as a clinical note section.",
    "What would go in the {section} section of the notes for this consult?",
    "Turn this conversation into the {section} portion of the note.",
    "Write a short {section} note from the dialogue above.",
    "Medical scribe here. Please write the {section} for this patient from the conversation.",
    "{section} please, from this convo",
    "Based on what the patient and doctor said, document the {section}.",
    "I'm finishing my notes after clinic. Could you write the {section} from the transcript below?",
    "give me the {section} for this encounter",
    "How would you chart the {section} from this exchange?",
    "From the conversation, put together the {section} section of the medical record.",
    "Condense this dialogue into the {section} of the visit documentation.",
    "Please document the patients {section} from this conversation.",
    "Our EHR needs a {section} entry for this visit. Can you write it from the dialogue?",
];

/// `ner` (BC5CDR), every template (`NER_QUERY`, ...): the chemicals and the diseases the
/// abstract mentions. No slots.
pub const NER_CHEMICALS_AND_DISEASES: &[&str] = &[
    "What chemicals and diseases are mentioned here?",
    "chemicals + diseases in this abstract?",
    "Pull out all the drugs/chemicals and all the diseases from this text.",
    "Can you find every chemical and disease named in the passage?",
    "I need the chemical and disease mentions from this abstract for an annotation project.",
    "Which substances and which illnesses does this text talk about?",
    "Identify the chemical compounds and the diseases in the following text.",
    "chemicals and diseases pls",
    "Tag the drugs and the diseases mentioned in this abstract.",
    "Go through this abstract and tell me every chemical and every disease it names.",
    "Please extract chemical and disease entities from the text.",
    "Does the abstract mention any chemicals or diseases? Which ones?",
    "For my pharmacovigilance review: which chemicals (drugs included) and which diseases does this abstract mention?",
    "Find the diseases and the chemicals in this passage.",
    "Could you do NER on this for chemicals and diseases?",
    "what chemicals and diseases come up in the text above",
    "Spot the chemical names and disease names in this text.",
    "named entities (chemicals, diseases) in this abstract?",
    "Give me the chemicals adn diseases this abstract refers to.",
    "I'm building a drug-disease knowledge graph. What chemical and disease mentions are in this one?",
];

/// `ner` (NCBI-disease), every template: the diseases the abstract mentions (diseases only).
/// No slots.
pub const NER_DISEASES: &[&str] = &[
    "What diseases are mentioned in this text?",
    "diseases?",
    "Which medical conditions does this abstract talk about?",
    "Find all the disease names in the passage.",
    "Could you pick out every disease mentioned here?",
    "I'm annotating abstracts for disease mentions. Which ones appear in this one?",
    "Extract the disease mentions from this abstract.",
    "Any diseases named in the text? Which?",
    "the diseases in this abstract pls",
    "Please identify all diseases, disorders and syndromes referred to in the following text.",
    "What illnesses come up in this passage?",
    "Disease NER on this text, please.",
    "Go through this and pull out the diseases.",
    "Which disorders or diseases does this text name?",
    "Tell me the diseases that the abstract above refers to.",
    "For a genetics review I'm collecting disease names. Which diseases does this paper mention?",
    "what diseses are in this text",
    "Only the diseases, please: which ones does this abstract mention?",
];

/// `re` (BC5CDR), every template: the chemical-induced-disease pairs the abstract states, or
/// none. No slots.
pub const RE_CID: &[&str] = &[
    "According to this abstract, which chemicals cause which diseases?",
    "Does this text say any drug or chemical caused a disease? Which chemical, which disease?",
    "Find the drug and adverse effect pairs described here.",
    "Which diseases or side effects are said to be induced by which chemicals in this passage?",
    "chemical causes disease relations in this text?",
    "I'm doing drug safety surveillance. From this abstract, which chemicals induced which diseases?",
    "Does this paper link any chemicals to diseases they cause? Give me the pairs.",
    "What did the chemicals in this text cause? Give each chemical with the disease it induced.",
    "Extract chemical-disease causation from the abstract.",
    "Which drug caused which condition according to this text?",
    "Tell me every case in this abstract where a chemical is reported to bring about a disease.",
    "Pull the chemical-induced disease pairs out of this abstract, if any.",
    "which chemical brought on which disease here",
    "Any adverse drug reactions in this text? Which chemical led to which disease?",
    "Please identify the causal chemical-disease relationships stated in the passage.",
    "From the text above, what diseases were caused by which substances?",
    "Can you find where this abstract says a chemical induces a disease? I need both names for each case.",
    "what chemical-disease causal links does this abstract describe",
];

/// `re` (ChemProt), every variant (`chemprot_query`, ...): the sentence marks the chemical with
/// `<< >>` and the gene with `[[ ]]`; one relation label. Slot: `{labels}` (the allowed labels).
pub const RE_CHEMPROT: &[&str] = &[
    "In this sentence, how are the << >> chemical and the [[ ]] gene related? Options: {labels}.",
    "What effect does the chemical inside << >> have on the gene/protein inside [[ ]]? Choose from {labels}.",
    "Classify the interaction between << >> and [[ ]] in this sentence as one of: {labels}",
    "What does the << >> compound do to the [[ ]] protein here? Possible labels: {labels}.",
    "I'm curating chemical-protein interactions. For the marked pair (chemical in << >>, gene in [[ ]]), which label fits best: {labels}?",
    "relation of << >> to [[ ]]? pick one: {labels}",
    "Which of {labels} describes what the chemical in << >> does to the gene product in [[ ]]?",
    "Labels: {labels}. Which one fits the << >> chemical and the [[ ]] gene in this text?",
    "Using one of these labels ({labels}), tell me how the << >>-marked chemical relates to the [[ ]]-marked gene.",
    "Is the chemical in << >> an inhibitor, an agonist, a substrate...? Pick the right one from {labels} for its effect on [[ ]].",
    "Chemical << >>, gene [[ ]]: what kind of interaction does this sentence describe? Choose from: {labels}",
    "What role does the << >> chemical play for the [[ ]] gene in this sentence? One of {labels}.",
    "From the sentence, categorize the effect of << >> on [[ ]]. Allowed: {labels}.",
    "what's << >> doing to [[ ]] here? choices: {labels}",
    "Please read the sentence and decide which relation holds between the marked chemical (<< >>) and the marked gene ([[ ]]): {labels}.",
    "For my ChemProt-style annotation, which label applies to the << >> / [[ ]] pair? {labels}",
    "The chemical is in << >> and the gene in [[ ]]. Which relation from {labels} connects them?",
    "Which interaction type links << >> with [[ ]] here: {labels}?",
];

/// `ea` (MedQuAD), every template ("What kind of entity is \"{e}\"? ..."): the entity's category,
/// UMLS semantic types and semantic group. Slot: `{entity}`.
pub const EA_ENTITY_TYPE: &[&str] = &[
    "How would you type {entity}? I'd like its category, semantic type(s) and semantic group.",
    "Classify {entity}: category, UMLS semantic type, and semantic group?",
    "{entity} - category, semantic types, semantic group?",
    "Can you tell me how {entity} is classified (category, semantic types and semantic group)?",
    "I'm building a medical ontology. For \"{entity}\", what are the category, the UMLS semantic types, and the semantic group?",
    "what kind of thing is {entity}? category + semantic type + semantic group pls",
    "Give me the category, semantic types and semantic group for {entity}.",
    "How would {entity} be categorized, and what are its semantic types and semantic group in UMLS?",
    "Is {entity} a disease, a drug, a gene...? Tell me its category, its semantic types and its semantic group.",
    "UMLS semantic type(s), semantic group and category of {entity}?",
    "For \"{entity}\", which category does it belong to, what semantic types does it have, and what semantic group is it in?",
    "Please classify the medical term {entity} by category, semantic type and semantic group.",
    "I need to tag {entity} in our database. What category, semantic types and semantic group should I use?",
    "Entity typing for {entity}: category, semantic types, semantic group.",
    "What semantic group is {entity} in? Also its category and semantic types, please.",
    "Could you look up what sort of entity {entity} is, with its category, semantic typs and semantic group?",
];

/// `ea` (BC5CDR), the mention question ("In this sentence, is \"...\" a chemical or a
/// disease?"): the sentence is the text; chemical or disease. Slot: `{entity}`.
pub const EA_CHEMICAL_OR_DISEASE: &[&str] = &[
    "Here, does \"{entity}\" refer to a chemical or to a disease?",
    "{entity}: chemical or disease?",
    "chemical or disease - {entity}?",
    "In the sentence, what kind of entity is {entity}, a chemical or a disease?",
    "Would you tag \"{entity}\" in this text as a chemical or as a disease?",
    "I'm annotating this sentence. Is the mention \"{entity}\" a chemical or a disease?",
    "Does {entity} name a chemical substance or a disease in this context?",
    "What is {entity} in this sentence: chemical, or disease?",
    "Is the term {entity} used as a chemical name or a disease name in the text?",
    "classify {entity} in this sentence (chemical vs disease)",
    "Entity type of \"{entity}\" here - chemical or disease?",
    "Should {entity} be labeled chemical or disease?",
    "In the context of this sentence, is \"{entity}\" a disease, or is it a chemical?",
    "Is {entity} naming a chemical or a disease in teh sentence above?",
    "Chemical or disease? I mean \"{entity}\" in this sentence.",
    "Reading this, would you call {entity} a disease or a chemical?",
];

/// `ea` (NCBI-disease), the mention question ("... what kind of disease mention is \"...\": a
/// specific disease, a disease class, a modifier, or a composite mention?"): the sentence is the
/// text. Slot: `{entity}`.
pub const EA_DISEASE_MENTION_KIND: &[&str] = &[
    "Is \"{entity}\" in this sentence a specific disease, a class of diseases, a modifier, or a composite mention?",
    "Classify the mention {entity}: specific disease, disease class, modifier, or composite mention?",
    "{entity} - specific disease, disease class, modifier or composite mention?",
    "How is \"{entity}\" used in this sentence? Options: specific disease, disease class, modifier (a disease name describing something else), composite mention (several diseases named together).",
    "I'm annotating disease mentions NCBI-style. Which type is \"{entity}\": specific disease, disease class, modifier, or composite mention?",
    "Does {entity} name one specific disease, a class of diseases, act as a modifier, or is it a composite mention?",
    "Which of these describes \"{entity}\" in the text: composite mention, modifier, disease class, specific disease?",
    "Mention type for {entity}? (specific disease / disease class / modifier / composite mention)",
    "Here, is {entity} a modifier, a composite mention, a disease class, or a specific disease?",
    "Tell me whether \"{entity}\" refers to a specific disease or a disease class, or is a modifier or a composite mention.",
    "disease mention category for {entity}: specific disease, disease class, modifier, composite mention?",
    "For the term \"{entity}\" in this sentence, pick: specific disease, disease class, modifier, or composite mention.",
    "wat is {entity} here, a specific disease, a disease class, a modifier or a composite mention?",
    "Would you label \"{entity}\" as a specific disease, a disease class, a modifier, or a composite mention in this context?",
    "Categorize the disease mention {entity} (specific disease, disease class, modifier, composite mention).",
    "Looking at {entity} in the sentence above: specific disease, disease class, modifier, or composite mention?",
];

/// `es` (MedQuAD synonyms; BC5CDR and NCBI-disease names sharing an id), the other-names
/// templates ("What are other names for {e}?", "Give other names used for \"...\"."): the
/// entity's other names. Slot: `{entity}`.
pub const ES_OTHER_NAMES: &[&str] = &[
    "What else is {entity} called?",
    "synonyms for {entity}?",
    "Does {entity} go by any other names?",
    "I keep seeing different names for {entity} in papers. What are the alternatives?",
    "Alternative names of \"{entity}\", please.",
    "{entity} aka?",
    "Other terms for {entity}?",
    "What are some other ways people refer to {entity}?",
    "Could you list the alternate names of {entity}?",
    "I'm building a literature search and need the other names for {entity}. What are they?",
    "Any synonyms or alternative terms for \"{entity}\"?",
    "Is there a different name people use for {entity}? Or several?",
    "How else might {entity} be called in the literature?",
    "Give me synonms for {entity}",
    "Which names refer to the same thing as \"{entity}\"?",
    "{entity} is sometimes called by other names, right? Which ones?",
    "Is {entity} known under any other name? Which?",
    "For a patient handout I want to mention the other names of {entity}. What are they?",
];

/// `es` (MedQuAD), the reverse-synonym template ("\"{s}\" is another name for which condition or
/// substance?"): the main name of the condition or substance. Slot: `{entity}` (the synonym).
pub const ES_MAIN_NAME: &[&str] = &[
    "What condition or substance is also called \"{entity}\"?",
    "\"{entity}\" - what's the usual name for that?",
    "Which disease or substance goes by the name {entity}?",
    "What is {entity} more commonly known as?",
    "I came across the term \"{entity}\". What's the main name of the condition or substance it refers to?",
    "What's the standard name for {entity}?",
    "{entity}, what's that better known as?",
    "Which condition or drug does \"{entity}\" refer to?",
    "My doctor wrote \"{entity}\" on a form. What is that usually called?",
    "\"{entity}\" is an alternative name; what is the primary one?",
    "Can you tell me the preferred name for {entity}?",
    "what is {entity} a synonym of",
    "Which medical entity is {entity} a synonym for?",
    "Under what name is {entity} usually listed?",
    "If something is called {entity}, what's its official name?",
    "{entity} is a synonim of which condition or substance?",
    "For our glossary: \"{entity}\" should point to which main entry (condition or substance)?",
];

/// `es` (BC5CDR and NCBI-disease names), the same-entity template ("Do \"...\" and \"...\" refer
/// to the same entity? Answer yes or no."): yes or no. Slots: `{entity}`, `{other}`.
pub const ES_SAME_ENTITY: &[&str] = &[
    "Are {entity} and {other} the same thing?",
    "Is \"{entity}\" just another name for \"{other}\"?",
    "{entity} vs {other} - same entity?",
    "Do {entity} and {other} mean the same?",
    "Can {entity} and {other} be used interchangeably for the same entity?",
    "Quick check: is \"{entity}\" the same as \"{other}\"?",
    "Are \"{entity}\" and \"{other}\" synonyms?",
    "I'm merging records in a database. Do \"{entity}\" and \"{other}\" denote one concept? yes/no",
    "Is {other} the same as {entity}?",
    "Would {entity} and {other} map to the same medical concept?",
    "same thing? {entity} / {other}",
    "Does \"{other}\" name the same entity as \"{entity}\"?",
    "Are {entity} and {other} two names for one entity? Yes or no.",
    "is {entity} teh same as {other}",
    "Could {entity} and {other} be the same disease or chemical under different names?",
    "In medical terms, are \"{entity}\" and \"{other}\" equivalent?",
    "Would a terminologist treat {entity} and {other} as the same entity?",
];

/// `er` (BC5CDR), the yes/no templates ("Can {c} induce {d}? Answer yes or no.", ...): does the
/// chemical induce the disease? Yes or no. Slots: `{chemical}`, `{disease}`.
pub const ER_CID_YES_NO: &[&str] = &[
    "Is {chemical} able to cause {disease}?",
    "Does {chemical} lead to {disease}?",
    "Could taking {chemical} give someone {disease}?",
    "I'm on {chemical}. Can it cause {disease}?",
    "Is there evidence that {chemical} induces {disease}? yes or no",
    "Has {chemical} been reported to bring on {disease}?",
    "yes/no: {chemical} can induce {disease}",
    "Can exposure to {chemical} result in {disease}?",
    "Is {chemical}-induced {disease} a thing?",
    "Is {disease} among the adverse reactions linked to {chemical}?",
    "my doctor prescribed {chemical}. could it give me {disease}?",
    "Is {disease} listed among the harmful effects of {chemical}?",
    "Pharmacology question: can {chemical} trigger {disease}? Just yes or no.",
    "Is it known that {chemical} can provoke {disease}?",
    "Could {disease} be caused by {chemical}?",
    "For a drug-safety report: is {chemical} known to induce {disease}?",
    "does {chemical} cuase {disease}",
    "{chemical} and {disease}: is the first known to cause the second?",
];

/// `er` (BC5CDR), the list template ("Which diseases or adverse effects can ... induce?"): the
/// diseases the chemical can induce. Slot: `{chemical}`.
pub const ER_CID_LIST: &[&str] = &[
    "What diseases does {chemical} cause?",
    "Side effects of {chemical}?",
    "What adverse effects is {chemical} known to bring on?",
    "Which conditions are linked to {chemical} as a cause?",
    "I was just prescribed {chemical}. What health problems can it cause?",
    "{chemical}: what disorders can it lead to?",
    "Name the diseases that {chemical} can trigger.",
    "What are the known toxic effects of {chemical}?",
    "what can {chemical} give you",
    "Which adverse reactions or diseases have been attributed to {chemical}?",
    "Can you tell me what diseases {chemical} has been reported to cause?",
    "For a medication safety review I need the diseases {chemical} can induce. What are they?",
    "What illnesses might result from taking {chemical}?",
    "Tell me the adverse effects caused by {chemical}.",
    "{chemical} induced diseases?",
    "What harm can {chemical} do? Which diseases is it known to cause?",
    "which diseses or side effects does {chemical} cause",
];

/// `er` (ChemProt), the pair template ("How does the chemical ... act on the gene or protein
/// ...? Answer with one of: ..."): one relation label, no sentence given. Slots: `{chemical}`,
/// `{gene}`, `{labels}`.
pub const ER_CHEMPROT: &[&str] = &[
    "What does {chemical} do to {gene}? Pick one of: {labels}.",
    "How does {chemical} interact with {gene}? Options: {labels}",
    "{chemical} on {gene} - which relation? {labels}",
    "Is {chemical} an inhibitor, activator, substrate... of {gene}? Choose the best label from {labels}.",
    "I'm curating a chemical-protein interaction database. For {chemical} and {gene}, which of these fits: {labels}?",
    "Classify the effect of {chemical} on the protein {gene} using one of {labels}.",
    "Which label describes the relationship between {chemical} and {gene}? Labels: {labels}.",
    "what's the relation between {chemical} and {gene} (one of {labels})",
    "Choose from {labels}: how does {chemical} affect {gene}?",
    "Known interaction of {chemical} with {gene}: which one of {labels}?",
    "What kind of effect does {chemical} have on {gene}? Use a label from {labels}.",
    "From what's known, what is the role of {chemical} toward {gene}? Pick among {labels}.",
    "Relation type for {chemical} and {gene}? One of {labels}.",
    "Does {chemical} inhibit, activate, or otherwise regulate {gene}? Give the matching label from {labels}.",
    "{gene} and {chemical}: which relation from {labels} describes what the chemical does to the gene?",
    "For my thesis on drug-target interactions, tell me how {chemical} relates to {gene} in terms of these labels: {labels}.",
    "how does {chemical} affect {gene}? choose one: {labels}",
];

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// Every slot name a request may carry.
    const SLOTS: &[&str] = &[
        "question",
        "question_and_options",
        "section",
        "hallmark",
        "hallmarks",
        "labels",
        "entity",
        "other",
        "chemical",
        "disease",
        "gene",
    ];

    /// A list, its required slots (exactly once each), its optional slots (at most once), and
    /// words every entry must contain (case-insensitive) so the answer's information is kept.
    struct Spec {
        name: &'static str,
        list: &'static [&'static str],
        required: &'static [&'static str],
        optional: &'static [&'static str],
        words: &'static [&'static str],
    }

    #[rustfmt::skip]
    const SPECS: &[Spec] = &[
        Spec { name: "QA_QUESTION", list: QA_QUESTION, required: &["question"], optional: &[], words: &[] },
        Spec { name: "MCQA", list: MCQA, required: &["question_and_options"], optional: &[], words: &[] },
        Spec { name: "MC_NEXT_TURN", list: MC_NEXT_TURN, required: &[], optional: &[], words: &[] },
        Spec { name: "MLDC_LIST", list: MLDC_LIST, required: &[], optional: &["hallmarks"], words: &["hallmark"] },
        Spec { name: "MLDC_ONE", list: MLDC_ONE, required: &["hallmark"], optional: &[], words: &[] },
        Spec { name: "MRC", list: MRC, required: &["question"], optional: &[], words: &["yes", "no", "maybe"] },
        Spec { name: "NLI_RQE", list: NLI_RQE, required: &[], optional: &[], words: &[] },
        Spec { name: "TS_SECTION", list: TS_SECTION, required: &["section"], optional: &[], words: &[] },
        Spec { name: "NER_CHEMICALS_AND_DISEASES", list: NER_CHEMICALS_AND_DISEASES, required: &[], optional: &[], words: &[] },
        Spec { name: "NER_DISEASES", list: NER_DISEASES, required: &[], optional: &[], words: &[] },
        Spec { name: "RE_CID", list: RE_CID, required: &[], optional: &[], words: &[] },
        Spec { name: "RE_CHEMPROT", list: RE_CHEMPROT, required: &["labels"], optional: &[], words: &["<< >>", "[[ ]]"] },
        Spec { name: "EA_ENTITY_TYPE", list: EA_ENTITY_TYPE, required: &["entity"], optional: &[], words: &["categor", "semantic typ", "semantic group"] },
        Spec { name: "EA_CHEMICAL_OR_DISEASE", list: EA_CHEMICAL_OR_DISEASE, required: &["entity"], optional: &[], words: &["chemical", "disease"] },
        Spec { name: "EA_DISEASE_MENTION_KIND", list: EA_DISEASE_MENTION_KIND, required: &["entity"], optional: &[], words: &["specific", "class", "modifier", "composite"] },
        Spec { name: "ES_OTHER_NAMES", list: ES_OTHER_NAMES, required: &["entity"], optional: &[], words: &[] },
        Spec { name: "ES_MAIN_NAME", list: ES_MAIN_NAME, required: &["entity"], optional: &[], words: &[] },
        Spec { name: "ES_SAME_ENTITY", list: ES_SAME_ENTITY, required: &["entity", "other"], optional: &[], words: &[] },
        Spec { name: "ER_CID_YES_NO", list: ER_CID_YES_NO, required: &["chemical", "disease"], optional: &[], words: &[] },
        Spec { name: "ER_CID_LIST", list: ER_CID_LIST, required: &["chemical"], optional: &[], words: &[] },
        Spec { name: "ER_CHEMPROT", list: ER_CHEMPROT, required: &["chemical", "gene", "labels"], optional: &[], words: &[] },
    ];

    /// The `{...}` slot names of `entry`, in order; panics on an unbalanced brace.
    fn slots(entry: &str) -> Vec<&str> {
        let mut out = Vec::new();
        let mut rest = entry;
        while let Some(open) = rest.find(['{', '}']) {
            assert!(rest[open..].starts_with('{'), "stray '}}' in {entry:?}");
            let close = rest[open..]
                .find('}')
                .unwrap_or_else(|| panic!("unclosed '{{' in {entry:?}"))
                + open;
            let name = &rest[open + 1..close];
            assert!(!name.contains('{'), "nested '{{' in {entry:?}");
            out.push(name);
            rest = &rest[close + 1..];
        }
        out
    }

    #[test]
    fn requests_are_well_formed() {
        let mut names = BTreeSet::new();
        for spec in SPECS {
            assert!(names.insert(spec.name), "{} listed twice", spec.name);
            assert!(
                spec.list.len() >= 16,
                "{}: {} entries (< 16)",
                spec.name,
                spec.list.len()
            );
            let mut seen = BTreeSet::new();
            for &entry in spec.list {
                assert_eq!(entry, entry.trim(), "{}: untrimmed {entry:?}", spec.name);
                assert!(!entry.is_empty(), "{}: empty entry", spec.name);
                let key: String = entry
                    .to_lowercase()
                    .chars()
                    .filter(|c| c.is_alphanumeric() || *c == '{' || *c == '}')
                    .collect();
                assert!(seen.insert(key), "{}: duplicate {entry:?}", spec.name);
                let found = slots(entry);
                for slot in &found {
                    assert!(
                        SLOTS.contains(slot),
                        "{}: unknown slot {{{slot}}} in {entry:?}",
                        spec.name
                    );
                    assert!(
                        spec.required.contains(slot) || spec.optional.contains(slot),
                        "{}: slot {{{slot}}} not expected in {entry:?}",
                        spec.name
                    );
                    let n = found.iter().filter(|s| *s == slot).count();
                    assert_eq!(
                        n, 1,
                        "{}: {{{slot}}} appears {n} times in {entry:?}",
                        spec.name
                    );
                }
                for slot in spec.required {
                    assert!(
                        found.contains(slot),
                        "{}: {{{slot}}} missing in {entry:?}",
                        spec.name
                    );
                }
                let lower = entry.to_lowercase();
                for word in spec.words {
                    assert!(
                        lower.contains(word),
                        "{}: {word:?} missing in {entry:?}",
                        spec.name
                    );
                }
                // Users don't dictate the answer layout.
                for layout in ["chemicals:", "diseases:", "semicolon", "->", "one per line"] {
                    assert!(
                        !lower.contains(layout),
                        "{}: layout {layout:?} in {entry:?}",
                        spec.name
                    );
                }
            }
        }
        // The NCBI records answer diseases only.
        for entry in NER_DISEASES {
            let lower = entry.to_lowercase();
            for other in ["chemical", "drug", "substance"] {
                assert!(
                    !lower.contains(other),
                    "NER_DISEASES asks for {other}: {entry:?}"
                );
            }
        }
        // Both halves of the question pair are named.
        for entry in NLI_RQE {
            let words: Vec<&str> = entry.split(|c: char| !c.is_alphanumeric()).collect();
            assert!(
                words.contains(&"A") && words.contains(&"B"),
                "NLI_RQE: {entry:?}"
            );
        }
    }
}
