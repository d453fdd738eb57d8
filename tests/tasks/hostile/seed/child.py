def run():
    return {"fitness": 0.5, "descriptors": [0.5, 0.5], "valid": True}
