"""Config sections of the task: the prompts a run samples and the reward terms that score
its images."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from configs.schema_section import Section

PROMPT_SETS = ("animals_activities", "colour_fruit", "object_relation")


def prompt_set_files(name: str) -> dict[str, str]:
    """The train and test files of a named prompt set (ALGORITHM.md's three templates)."""
    return {split: f"configs/prompts/{name}_{split}.txt" for split in ("train", "test")}


class PromptsConfig(Section):
    """`set` names one of the paper's prompt templates and stands for its two files;
    otherwise `train` / `test` are prompt files (one prompt a line)."""

    set: Literal["animals_activities", "colour_fruit", "object_relation"] | None = None
    train: str = "toyworld/prompts/all_train.txt"
    test: str = "toyworld/prompts/all_test.txt"

    @model_validator(mode="before")
    @classmethod
    def _files_of_the_set(cls, data: object) -> object:
        # a set fills in its files; the resolved config a run saves names both, so equal
        # files beside a set are accepted and other ones refused (`_one_source`)
        if isinstance(data, dict) and data.get("set") in PROMPT_SETS:
            return {**prompt_set_files(data["set"]), **data}
        return data

    @field_validator("train", "test")
    @classmethod
    def _one_source(cls, path: str, info: ValidationInfo) -> str:
        name = info.data.get("set")
        if name is not None and path != prompt_set_files(name)[info.field_name]:
            raise ValueError(
                f"prompts.set={name} names the prompt files itself: give a set or files, not both"
            )
        return path


class RewardTerm(Section):
    """One reward term: a registered reward (`rewards.registry`: the built-ins, `remote`, or
    a package's entry point in `b2_diffurl.rewards`) and its settings."""

    name: str = Field(description="A registered reward name (rewards.registry.known_names).")
    label: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="Key of this term's metric (reward_<label>); default the name, then "
        "name_2, name_3 for repeats.",
    )
    weight: float = 1.0
    model: str | None = Field(
        None,
        description="clip_score / aesthetic: open_clip architecture; bert_score: BERT model "
        "dir; pickscore: CLIPModel hub id or folder; custom: package.module:name.",
    )
    checkpoint: str | None = Field(None, description="open_clip pretrained tag or local path.")
    num_layers: int = Field(6, ge=1, description="bert_score: BERT layer whose embeddings count.")
    captioner: str | None = Field(
        None,
        description="bert_score: 'toy' (the toy world's describer, default) or a transformers "
        "image-to-text model, hub id or folder (BLIP, LLaVA-style; rewards.captioner).",
    )
    options: dict[str, str | int | float | bool | list[str | int | float | bool] | None] = Field(
        default_factory=dict, description="A plug-in reward's own settings, read in its setup."
    )
    url: str | None = Field(
        None,
        pattern=r"^https?://[^\s/]+(/\S*)?$",
        description="remote: the scoring server's base URL (python -m rewards.serve).",
    )
    timeout_s: float = Field(60.0, gt=0.0, description="remote: seconds to wait per request.")
    retries: int = Field(2, ge=0, description="remote: further tries of a failed request.")
    batch_size: int = Field(
        0, ge=0, description="remote: images per request (0: the whole batch in one)."
    )

    @field_validator("name")
    @classmethod
    def _registered_name(cls, name: str) -> str:
        from rewards.registry import known_names

        known = known_names()
        if name not in known:
            raise ValueError(f"unknown reward; known: {', '.join(known)}")
        return name

    @model_validator(mode="after")
    def _url_with_remote(self) -> RewardTerm:
        if self.name == "remote" and not self.url:
            raise ValueError("a remote reward needs url (e.g. http://127.0.0.1:8700)")
        if self.name != "remote" and self.url:
            raise ValueError(f"url is for remote rewards, not {self.name!r}")
        return self
