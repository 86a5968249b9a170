import time, torch, sys, numpy as np
sys.path.insert(0, "/work/main")
from searchkit.models.cross_encoder import load_cross_encoder
torch.set_num_threads(2)
lm = load_cross_encoder("training/scifact-reranker-e1", dtype=torch.float32)
m = lm.model.eval()
from searchkit.index import Index
from searchkit.search import Searcher
from searchkit.experiments.suite import select_queries
from searchkit.formats import document_text
index = Index.open("indexes/scifact")
qs = select_queries("/work/shared/datasets/scifact", "test")[:8]
first = Searcher(index, mode="bm25").search_batch([q.text for q in qs], 8)
pq = [q.text for q, h in zip(qs, first) for _ in h]
pt = [document_text(d) for h in first for d in index.documents([x.doc_id for x in h])]
enc = lm.tokenizer(pq, pt, truncation="only_second", max_length=256, padding=True, return_tensors="pt")
ids, tt, am = enc["input_ids"], enc["token_type_ids"], enc["attention_mask"]
print(ids.shape)
class W(torch.nn.Module):
    def __init__(s, m): super().__init__(); s.m = m
    def forward(s, a, b, c): return s.m(input_ids=a, token_type_ids=b, attention_mask=c).logits
t0 = time.perf_counter()
torch.onnx.export(W(m), (ids[:2, :16], tt[:2, :16], am[:2, :16]), "/tmp/exp/rr.onnx", input_names=["a", "b", "c"], output_names=["o"],
    dynamic_axes={"a": {0: "B", 1: "L"}, "b": {0: "B", 1: "L"}, "c": {0: "B", 1: "L"}}, opset_version=17, dynamo=False)
print("export", time.perf_counter() - t0, flush=True)
import onnxruntime as ort
so = ort.SessionOptions(); so.intra_op_num_threads = 2; so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
sess = ort.InferenceSession("/tmp/exp/rr.onnx", so, providers=["CPUExecutionProvider"])
feed = {"a": ids.numpy(), "b": tt.numpy(), "c": am.numpy()}
def tm(f):
    f(); ts = []
    for _ in range(3):
        s = time.perf_counter(); o = f(); ts.append(time.perf_counter() - s)
    return sorted(ts)[1], o
with torch.inference_mode():
    te, oe = tm(lambda: m(input_ids=ids, token_type_ids=tt, attention_mask=am).logits.numpy())
to, oo = tm(lambda: sess.run(None, feed)[0])
print("torch fp32", te, "ort fp32", to, "ratio", te / to, "maxdiff", np.abs(oe - oo).max(), flush=True)
from onnxruntime.quantization import quantize_dynamic, QuantType
quantize_dynamic("/tmp/exp/rr.onnx", "/tmp/exp/rr8.onnx", weight_type=QuantType.QInt8)
s8 = ort.InferenceSession("/tmp/exp/rr8.onnx", so, providers=["CPUExecutionProvider"])
t8, o8 = tm(lambda: s8.run(None, feed)[0])
print("ort int8", t8, "ratio vs torch fp32", te / t8, "maxdiff", np.abs(oe - o8).max())
lb = load_cross_encoder("training/scifact-reranker-e1", dtype=torch.bfloat16).model.eval()
with torch.inference_mode():
    tb, ob = tm(lambda: lb(input_ids=ids, token_type_ids=tt, attention_mask=am).logits.float().numpy())
print("torch bf16", tb, "ratio", te / tb, "maxdiff", np.abs(oe - ob).max())
