#!/usr/bin/env python3
"""Small random-weight HF checkpoints of every encoder family gp-lite loads, with reference
hidden states computed by HF transformers, for tests/it/families.rs.

    python3 benches/encoder_families.py make [--out fixtures/encoders]
        For each family (bert, roberta, xlm-roberta, electra, distilbert): a tokenizer trained on
        fixtures/cluener-sample/train.json (WordPiece over its characters for BERT, ELECTRA and
        DistilBERT; byte-level BPE for RoBERTa; Unigram for XLM-RoBERTa), a random-weight model of
        hidden size 32 (ELECTRA: embeddings 16, projected to 32) saved by `save_pretrained` in
        f16 under the class and tensor prefix a hub checkpoint of the family has, and
        reference.safetensors: input_ids, attention_mask, token_type_ids of two right-padded
        texts and the base model's last_hidden_state computed in float64 from the f16 weights.

    python3 benches/encoder_families.py loadback GP_LITE_MODEL_DIR
        Loads a gp-lite model directory's encoder tensors into the HF class of its family
        (config.json's `encoder.model_type`) and fails on any missing tensor; prints the head
        tensors HF does not know (gp-lite's own) and the largest difference between gp-lite's and
        HF's hidden states is not checked here (tests/it/families.rs does that).

Needs torch, transformers, tokenizers, safetensors (pip install torch transformers).
"""
import argparse
import json
import os
import sys

import torch
from safetensors.torch import save_file, load_file
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers, decoders
import transformers as tf

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SAMPLE = os.path.join(ROOT, "fixtures", "cluener-sample", "train.json")
TEXTS = ["浙商银行企业信贷部叶老桂博士则从另一个角度对五道门槛进行了解读。",
         "生生不息CSOL生化狂潮让你填弹狂扫"]

# family -> (HF config class, class saved (its tensor prefix), base model class, tokenizer kind)
FAMILIES = {
    "bert": (tf.BertConfig, tf.BertModel, tf.BertModel, "wordpiece"),
    "roberta": (tf.RobertaConfig, tf.RobertaModel, tf.RobertaModel, "bpe"),
    "xlm-roberta": (tf.XLMRobertaConfig, tf.XLMRobertaForTokenClassification, tf.XLMRobertaModel, "unigram"),
    "electra": (tf.ElectraConfig, tf.ElectraForPreTraining, tf.ElectraModel, "wordpiece"),
    "distilbert": (tf.DistilBertConfig, tf.DistilBertForMaskedLM, tf.DistilBertModel, "wordpiece"),
}


def sample_texts():
    with open(SAMPLE, encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f]


def wordpiece(texts):
    chars = sorted(set("".join(texts)) - {" "})
    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + chars)}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=False)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tok.decoder = decoders.WordPiece()
    return tok, dict(pad_token_id=0)


def bpe(texts):
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1200, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0), trim_offsets=True)
    return tok, dict(pad_token_id=1, bos_token_id=0, eos_token_id=2)


def unigram(texts):
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=3000, special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
                                      unk_token="<unk>", show_progress=False)
    tok.train_from_iterator(texts, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)])
    return tok, dict(pad_token_id=1, bos_token_id=0, eos_token_id=2)


def config_for(name, cls, vocab_size, ids):
    common = dict(vocab_size=vocab_size, max_position_embeddings=64, initializer_range=0.2, **ids)
    if name == "distilbert":
        return cls(dim=32, n_layers=2, n_heads=4, hidden_dim=64, activation="gelu", **common)
    extra = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                 type_vocab_size=1 if name in ("roberta", "xlm-roberta") else 2, **common)
    if name in ("roberta", "xlm-roberta"):
        extra["max_position_embeddings"] = 66  # 64 positions after the offset pad_token_id + 1
        extra["layer_norm_eps"] = 1e-5
    if name == "electra":
        extra["embedding_size"] = 16
    return cls(**extra)


def make(out):
    texts = sample_texts()
    for name, (cfg_cls, saved_cls, base_cls, kind) in FAMILIES.items():
        torch.manual_seed(1234)
        tok, ids = {"wordpiece": wordpiece, "bpe": bpe, "unigram": unigram}[kind](texts)
        cfg = config_for(name, cfg_cls, tok.get_vocab_size(), ids)
        if name == "xlm-roberta":
            cfg.num_labels = 3
        model = saved_cls(cfg).eval()
        # LayerNorm weights and biases away from 1 and 0, so that a misplaced one shows.
        with torch.no_grad():
            for n, p in model.named_parameters():
                if "LayerNorm" in n or "layer_norm" in n:
                    p.add_(torch.randn_like(p) * 0.2)
                elif n.endswith("bias"):
                    p.normal_(0, 0.2)
        model = model.half()
        d = os.path.join(out, name)
        os.makedirs(d, exist_ok=True)
        model.save_pretrained(d, safe_serialization=True)
        tok.save(os.path.join(d, "tokenizer.json"))
        # The base model in float64 from the stored f16 weights.
        base = base_cls.from_pretrained(d, torch_dtype=torch.float64).eval() if saved_cls is not base_cls \
            else saved_cls.from_pretrained(d, torch_dtype=torch.float64).eval()
        encs = [tok.encode(t) for t in TEXTS]
        n = max(len(e.ids) for e in encs)
        pad = ids["pad_token_id"]
        input_ids = torch.full((len(encs), n), pad, dtype=torch.long)
        mask = torch.zeros((len(encs), n), dtype=torch.long)
        types = torch.zeros((len(encs), n), dtype=torch.long)
        for i, e in enumerate(encs):
            input_ids[i, :len(e.ids)] = torch.tensor(e.ids)
            mask[i, :len(e.ids)] = 1
            if cfg.model_type in ("bert", "electra"):
                types[i, len(e.ids) // 2:len(e.ids)] = 1  # a second segment, to test the type table
        kwargs = dict(input_ids=input_ids, attention_mask=mask)
        if cfg.model_type != "distilbert":
            kwargs["token_type_ids"] = types
        with torch.no_grad():
            h = base(**kwargs).last_hidden_state
        save_file({"input_ids": input_ids, "attention_mask": mask, "token_type_ids": types,
                   "last_hidden_state": h.contiguous()}, os.path.join(d, "reference.safetensors"))
        names = sorted(load_file(os.path.join(d, "model.safetensors")).keys())
        print(f"{name}: {saved_cls.__name__}, vocab {tok.get_vocab_size()}, {len(names)} tensors "
              f"(first {names[0]}), {os.path.getsize(os.path.join(d, 'model.safetensors'))} bytes")


def loadback(model_dir):
    with open(os.path.join(model_dir, "config.json")) as f:
        enc = json.load(f)["encoder"]
    name = enc["model_type"]
    cfg_cls, _, base_cls, _ = FAMILIES[name]
    if name == "distilbert":
        cfg = cfg_cls(vocab_size=enc["vocab_size"], dim=enc["hidden_size"], n_layers=enc["num_hidden_layers"],
                      n_heads=enc["num_attention_heads"], hidden_dim=enc["intermediate_size"],
                      max_position_embeddings=enc["max_position_embeddings"], activation=enc["hidden_act"])
    else:
        keep = {k: v for k, v in enc.items() if k not in ("position_offset", "attention_output_dropout")}
        if name in ("roberta", "xlm-roberta"):
            keep["pad_token_id"] = enc.get("position_offset", 2) - 1
        cfg = cfg_cls(**keep)
    model = base_cls(cfg, add_pooling_layer=False) if name in ("bert", "roberta", "xlm-roberta") else base_cls(cfg)
    state = load_file(os.path.join(model_dir, "model.safetensors"))
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("position_ids")]
    print(f"{name}: {len(state)} tensors in the file; missing in HF's {base_cls.__name__}: {missing}; "
          f"not HF's (gp-lite's head): {sorted(result.unexpected_keys)}")
    if missing:
        sys.exit(1)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make")
    m.add_argument("--out", default=os.path.join(ROOT, "fixtures", "encoders"))
    lb = sub.add_parser("loadback")
    lb.add_argument("model_dir")
    a = ap.parse_args()
    make(a.out) if a.cmd == "make" else loadback(a.model_dir)
