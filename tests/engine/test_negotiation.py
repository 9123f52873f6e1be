from engine.negotiation import EXPLICIT_LE, IMPLICIT_LE, MAX_CONTEXTS, covers, plan_contexts

CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"
JPEG = "1.2.840.10008.1.2.4.50"


def test_one_syntax_per_context_with_fallbacks():
    plans = plan_contexts([(CT, JPEG), (CT, JPEG), (MR, EXPLICIT_LE)])
    assert len(plans) == 1
    assert plans[0].contexts == ((CT, JPEG), (CT, EXPLICIT_LE), (CT, IMPLICIT_LE),
                                 (MR, EXPLICIT_LE), (MR, IMPLICIT_LE))


def test_split_at_128_contexts_without_dropping_a_class():
    classes = ["1.2.3.%d" % i for i in range(100)]
    pairs = [(c, JPEG) for c in classes]  # 3 contexts each -> 300 contexts
    plans = plan_contexts(pairs)
    assert all(len(p.contexts) <= MAX_CONTEXTS for p in plans)
    seen = [c for p in plans for c in p.sop_classes]
    assert sorted(seen) == sorted(classes)  # every class exactly once
    assert len(plans) == 3  # 42 classes (126 contexts) per association


def test_covers():
    plan = plan_contexts([(CT, JPEG)])[0]
    assert covers(plan.contexts, CT, JPEG)
    assert covers(plan.contexts, CT, EXPLICIT_LE)
    assert not covers(plan.contexts, MR, EXPLICIT_LE)
