from sandboxes.model import ModelError, chat

CALLS = 3


def run():
    answers, errors = [], []
    for i in range(CALLS):
        try:
            answers.append(chat([{"role": "user", "content": f"question {i}"}], max_tokens=8))
        except ModelError as exc:
            errors.append(f"{exc.status} {exc.code}")
            break
    return {"calls": CALLS, "answers": answers, "errors": errors}
