"""What the tasks share: the texts of a dataset, questions joined to their answers."""

from vlreg.build import build
from vlreg.tasks.base import dataset_texts

from tests.vlreg.data.test_concat import corpus_and_qa


def test_texts_join_questions_and_answers(small_world):
    texts = dataset_texts(corpus_and_qa(small_world))
    assert len(texts) == 40
    qa = corpus_and_qa(small_world).datasets[1]
    record = qa.records[0]
    item = qa[0]
    assert texts[30] == f"{item['text_input']} {item['text_output']}"
    assert texts[30].startswith(f"Question: {QUESTION_FORMAT(record['text_input'])} Short answer: ")


def QUESTION_FORMAT(question):  # noqa: N802 - the question processor's cleaning, as the reader applies it
    return build("processor", {"name": "question"})(question)
