"""One way to render a prompt: plain text or the model's chat template, decided once by params.

The prompts stage renders every prompt here and stores both forms: `prompt` (the exact text the
policy sees: generate, mcts, judges, critiques, train's standard format and evaluate all read it)
and `messages` (the same conversation as chat messages: TRL's conversational format). So every
stage sees the same text, and no stage re-renders.

- `format: plain` — the task's plain prompt (arith: `Q: 3+4=?\\n`), few-shot examples before it;
- `format: chat` — the tokenizer's chat template over [system], few-shot user/assistant turns
  and the user turn (the question plus the task's answer instruction), with the generation prompt;
- `format: auto` (default) — chat when the tokenizer has a chat template, plain otherwise (the
  tiny arith policy has none, and no tokenizer exists before it is trained).
"""

from __future__ import annotations

from dataclasses import dataclass, field


def _f(default, help: str):
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


FORMATS = ("auto", "plain", "chat")


@dataclass
class PromptingConfig:
    format: str = _f("auto", "auto (the chat template when the tokenizer has one, else plain) | plain | chat.")
    tokenizer: str | None = _f(None, "Tokenizer whose chat template renders prompts (path or Hub id); null: "
                               "bootstrap.model, else policy.model when it is a local directory, else none (plain).")
    system_prompt: str | None = _f(None, "System message of chat prompts (null: the template's default, if any).")
    instruction: str | None = _f(None, "Text after the question in the user turn; null: the task's answer "
                                 "instruction (e.g. gsm8k: end with 'The answer is <number>'); '' for none.")
    few_shot: list = _f([], "Worked examples before the question: a list of {question, answer} (answer: the "
                        "full worked solution in the format the task reads).")

    def __post_init__(self):
        if self.format not in FORMATS:
            raise ValueError(f"prompting.format must be one of {FORMATS}, got {self.format!r}")
        for i, shot in enumerate(self.few_shot):
            if not isinstance(shot, dict) or set(shot) != {"question", "answer"}:
                raise ValueError(f"prompting.few_shot[{i}] must be {{question: ..., answer: ...}}, got {shot!r}")


def resolve_tokenizer_path(cfg: PromptingConfig, bootstrap_model: str | None, policy_model: str | None) -> str | None:
    """Which tokenizer renders prompts (None: no tokenizer, plain text)."""
    import os

    if cfg.tokenizer:
        return cfg.tokenizer
    if bootstrap_model:
        return bootstrap_model
    if policy_model and os.path.isdir(policy_model):
        return policy_model
    return None


def load_tokenizer(path: str | None):
    if path is None:
        return None
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


class PromptRenderer:
    """Renders questions of a task as (prompt text, messages); one per stage worker."""

    def __init__(self, cfg: PromptingConfig, tokenizer=None):
        if cfg.format == "chat" and (tokenizer is None or not getattr(tokenizer, "chat_template", None)):
            raise ValueError("prompting.format is chat, but the tokenizer "
                             f"({getattr(tokenizer, 'name_or_path', None) or 'none: set prompting.tokenizer'}) "
                             "has no chat template")
        self.cfg, self.tokenizer = cfg, tokenizer
        self.chat = cfg.format == "chat" or (cfg.format == "auto" and tokenizer is not None
                                               and bool(getattr(tokenizer, "chat_template", None)))
        # what every prompt of a task shares (system prompt, few-shot examples), rendered once per
        # task: `render` then adds only the question (the config is fixed for the renderer's life)
        self._shared: dict = {}

    @property
    def mode(self) -> str:
        return "chat" if self.chat else "plain"

    def _user(self, task, question: str) -> str:
        if self.cfg.instruction is None:
            return task.user_message(question)
        return f"{question.strip()}\n{self.cfg.instruction}" if self.cfg.instruction else question.strip()

    def _shared_parts(self, task) -> tuple[list[dict], str]:
        """(the messages before the question's user turn, the plain text before the question's
        prompt) of `task`: system prompt and few-shot examples, built once per task."""
        shared = self._shared.get(id(task))  # by identity (the task is kept, so its id stays its own)
        if shared is None or shared[0] is not task:
            msgs = [{"role": "system", "content": self.cfg.system_prompt}] if self.cfg.system_prompt else []
            for shot in self.cfg.few_shot:
                msgs += [{"role": "user", "content": self._user(task, shot["question"])},
                         {"role": "assistant", "content": shot["answer"].strip()}]
            shots = "".join(task.format_prompt(s["question"]) + s["answer"].strip() + "\n\n"
                            for s in self.cfg.few_shot)
            system = f"{self.cfg.system_prompt.strip()}\n\n" if self.cfg.system_prompt else ""
            shared = self._shared[id(task)] = (task, msgs, system + shots)
        return shared[1], shared[2]

    def messages(self, task, question: str) -> list[dict]:
        before, _ = self._shared_parts(task)
        # fresh dicts: a caller may change one record's messages without touching the others'
        return [dict(m) for m in before] + [{"role": "user", "content": self._user(task, question)}]

    def render(self, task, question: str) -> tuple[str, list[dict]]:
        if self.chat:
            msgs = self.messages(task, question)
            text = self.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
            return text, msgs
        text = self._shared_parts(task)[1] + task.format_prompt(question)
        # plain text: the conversational form is that same text as one user turn
        return text, [{"role": "user", "content": text}]


def problem_text(record: dict) -> str:
    """The problem as a judge or critic should see it inside its own template: the plain prompt
    (arith: `Q: 3+4=?`) when prompts are plain text, the bare question when they are chat-rendered
    (a chat template inside another template would only confuse the judge)."""
    messages = record.get("messages") or []
    if messages and messages[-1].get("content") == record["prompt"]:
        return record["prompt"].strip()
    return (record.get("question") or record["prompt"]).strip()


class ChatTemplated:
    """A judge/critic template whose rendered text becomes the user turn of the model's chat
    template (with the generation prompt): instruct models are asked the way they were trained.
    Used only where the model's tokenizer has a chat template (a served model gets raw text)."""

    def __init__(self, template, tokenizer):
        self.template, self.tokenizer = template, tokenizer
        self.name, self.source = getattr(template, "name", None), getattr(template, "source", None)

    def render(self, **values) -> str:
        return chat_wrap(self.tokenizer, self.template.render(**values))


def has_chat_template(tokenizer) -> bool:
    return tokenizer is not None and bool(getattr(tokenizer, "chat_template", None))


def chat_wrap(tokenizer, text: str) -> str:
    if not has_chat_template(tokenizer):
        return text
    return tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                         add_generation_prompt=True)
