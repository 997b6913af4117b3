from setuptools import find_packages, setup

PACKAGE = "fowm_trainer"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    include_package_data=True,
    package_data={PACKAGE: ["**/*.xml", "**/*.yaml"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
    ],
    install_requires=["setuptools"],
    zip_safe=False,
    maintainer="fowm-ros maintainers",
    maintainer_email="maintainers@fowm-ros.dev",
    description="Recorder, rosbag ingestion, offline pretraining and the online trainer node that pushes weights to the planner.",
    license="MIT",
    entry_points={
        "console_scripts": [
            "fowm_recorder_node = fowm_trainer.recorder_node:main",
            "fowm_trainer_node = fowm_trainer.trainer_node:main",
            "fowm-pretrain = fowm_trainer.pretrain:main",
            "fowm-bag-play = fowm_trainer.bag_play:main",
            "fowm_reward_node = fowm_trainer.reward_node:main",
            "fowm-train-success-classifier = fowm_trainer.success_classifier:main",
        ],
    },
)
