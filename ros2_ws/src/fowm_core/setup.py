
from setuptools import find_packages, setup

PACKAGE = "fowm_core"

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
    description="The FOWM algorithm: TD-MPC world model, offline-to-online training and the uncertainty-regularised MPPI planner. Pure Python + PyTorch, no ROS.",
    license="MIT",
    entry_points={
        "console_scripts": ["fowm-keygen = fowm_core.weights:keygen_main"],
    },
)
