"""The legacy handler form: pipeline.py with PreTrainedPipeline."""


class PreTrainedPipeline:
    def __init__(self, path):
        self.path = path

    def __call__(self, inputs):
        return {"legacy": True, "inputs": inputs["inputs"]}
