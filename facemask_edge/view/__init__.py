"""``facemask-edge view``: a local web app to watch a board, read a run and try the model.

``app.create_app`` builds the Flask application; ``board_link.BoardLink`` keeps the board
connected in a background thread; ``report.load_report`` gathers a run's files for the report.
"""
