"""Fine-tuning: a classification head, supervised fine-tuning with a loss mask, and LoRA.

* :mod:`~minigpt.finetune.classify` — the genre task (split by play), :class:`GPTClassifier`,
  freezing, training, accuracy and confusion matrix, majority and bag-of-words baselines;
* :mod:`~minigpt.finetune.sft` — prompt → response examples, loss masks, collation, SFT, the
  instruction template;
* :mod:`~minigpt.finetune.lora` — low-rank adapters, merge / unmerge.
"""

from .classify import (CLASSES, FT_VAL_PLAYS, GENRE_CLASS, BagOfWords, Example, GPTClassifier,
                       LogisticRegression, accuracy, confusion_matrix, count_parameters, encode_texts,
                       freeze, genre_examples, majority_baseline, pool, predict, split_of, train_classifier)
from .lora import (LoRALinear, add_lora, lora_layers, lora_parameters, merge_lora, remove_lora,
                   unmerge_lora)
from .sft import (END, INSTRUCTION_TEMPLATE, choice_logprobs, collate, genre_pairs, instruction_example,
                  instruction_prompt, predict_genre, prompt_ids, response_loss, sft_example, train_sft)
